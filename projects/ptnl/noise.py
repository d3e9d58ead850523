"""Noisy few-shot training sets (PTNL's sampler and its variants) and UPL's pseudo-label selection.

Official sampler (``select_top_k_similarity_per_class_with_noisy_label``, Sep 2023 version), per seed,
K shots per class, ``num_fp`` of them wrong:
1. each class's training images in split-file order: the first ceil(n_c / 2) are its clean pool,
   the rest go to a global false-positive (FP) pool;
2. one ``np.random.default_rng(seed)`` is created before the class loop; for each class c in
   order: ``num_fp`` FP images drawn with Python's ``random.choices`` (with replacement) from the FP
   pool minus class c's own images and minus FP images already given to an earlier class (the
   candidates in the order of the official ``list(set.difference(...))``); K positions in c's clean
   pool drawn from that one generator in turn (``rng.choice``, without replacement if the pool has
   >= K images), so classes with equal pool sizes get different positions; the first ``num_fp`` of
   the K are overwritten by the FP images; all K are labelled c;
3. the result is a dict path -> label: duplicates collapse (``dedup``), so a class can end with fewer
   than K distinct shots (an FP image drawn twice, or a clean pool smaller than K).

Noise types (the wrong images always come from other classes' second halves):
- ``random``: as above (= "symflip" of the follow-up papers); wrong true classes are spread over
  all other classes in proportion to their pool sizes.
- ``pairflip``: class c receives its FP images from class (c + 1) mod C's second half only, so
  true class c+1 is labelled c (the cyclic transition of LZHMS/SRRS ``add_noise.py``).
- ``confusion`` (paper, "correlated label noise"; no released code, our reading): class c receives
  images whose most-favoured *wrong* class under zero-shot CLIP is c, drawn at random among them;
  if there are fewer than ``num_fp``, the rest are the images with the highest zero-shot p(c|x).

``fp_replacement=False`` draws the FP images without replacement and ``dedup=False`` keeps
duplicates: then every class has exactly K samples and exactly ``num_fp`` wrong ones.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

NOISE_TYPES = ("random", "pairflip", "confusion")


@dataclass
class FewShotSelection:
    indices: np.ndarray       # into the train split
    labels: np.ndarray        # the labels trained on (noisy or pseudo)
    true_labels: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def noise_rate(self) -> float:
        return float((self.labels != self.true_labels).mean()) if len(self) else 0.0

    def summary(self, num_classes: int) -> dict:
        wrong = self.labels != self.true_labels
        per_class = np.bincount(self.labels, minlength=num_classes)
        return {"n": int(len(self)), "noise_rate": self.noise_rate, "wrong": int(wrong.sum()),
                "per_class_min": int(per_class.min()), "per_class_max": int(per_class.max()),
                "classes_present": int((per_class > 0).sum())}


def num_fp_for(rate: float, shots: int) -> int:
    """The number of wrong shots per class for a noise rate; it must be a whole number."""
    n = rate * shots
    if not math.isclose(n, round(n), abs_tol=1e-6) or not 0 <= rate <= 1:
        raise ValueError(f"noise rate {rate} x {shots} shots = {n} wrong shots per class; the official sampler "
                         f"needs a whole number (e.g. {round(n)}/{shots} = {round(n) / shots})")
    return int(round(n))


def split_pools(true_labels: np.ndarray, num_classes: int) -> tuple[list[list[int]], list[list[int]]]:
    """Per class: (clean pool = first ceil(n_c/2) indices in split order, FP part = the rest)."""
    clean, fp = [], []
    for c in range(num_classes):
        idx = np.flatnonzero(true_labels == c).tolist()
        half = math.ceil(len(idx) / 2)
        clean.append(idx[:half])
        fp.append(idx[half:])
    return clean, fp


def _draw(rng: random.Random, pool, k: int, replacement: bool) -> list[int]:
    """``rng.choices(pool, k=k)`` (with replacement; the same stream as Python's random.choices, which
    picks pool[floor(random() * n)]) or ``rng.sample(pool, k)``; pool is a sequence or an int array."""
    if k == 0:
        return []
    n = len(pool)
    if n == 0:
        raise ValueError("no candidate images left to draw false positives from")
    if replacement or n < k:
        return [int(pool[math.floor(rng.random() * n)]) for _ in range(k)]
    return [int(pool[i]) for i in rng.sample(range(n), k)]


def sample_noisy_fewshot(true_labels, num_classes: int, shots: int = 16, num_fp: int = 0, seed: int = 1,
                         noise_type: str = "random", zs_probs: np.ndarray | None = None,
                         fp_replacement: bool = True, dedup: bool = True) -> FewShotSelection:
    """PTNL's noisy K-shot set (module docstring). ``zs_probs`` [N, C]: zero-shot CLIP probabilities
    of the train images (needed by ``confusion``)."""
    true_labels = np.asarray(true_labels, dtype=np.int64)
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise type must be one of {NOISE_TYPES}, got {noise_type!r}")
    if not 0 <= num_fp <= shots:
        raise ValueError(f"num_fp={num_fp} must be between 0 and shots={shots}")
    if noise_type == "confusion":
        if zs_probs is None:
            raise ValueError("confusion noise needs the zero-shot probabilities of the train images")
        zs_probs = np.asarray(zs_probs, dtype=np.float64)
        wrong = zs_probs.copy()
        wrong[np.arange(len(wrong)), true_labels] = -np.inf
        top_wrong = wrong.argmax(1)
    clean, fp_parts = split_pools(true_labels, num_classes)
    fp_pool = np.array([i for part in fp_parts for i in part], dtype=np.int64)
    fp_owner = true_labels[fp_pool]
    fp_set = set(fp_pool.tolist())  # the official candidates are a set: its iteration order is theirs
    free = np.ones(len(true_labels), dtype=bool)  # not yet given to a class as a false positive
    py_rng = random.Random(seed)
    pos_rng = np.random.default_rng(seed)  # one generator for every class's positions, as the official code
    out_idx, out_lab = [], []
    for c in range(num_classes):
        if not clean[c]:
            continue
        if noise_type == "random":
            chosen = np.flatnonzero(~free).tolist()
            cand = list(fp_set.difference(clean[c], fp_parts[c], chosen))
            fps = _draw(py_rng, cand, num_fp, fp_replacement)
        elif noise_type == "pairflip":
            src = np.array(fp_parts[(c + 1) % num_classes], dtype=np.int64)
            cand = src[free[src]].tolist()
            cand = py_rng.sample(cand, len(cand))  # shuffled order
            fps = _draw(py_rng, cand, num_fp, fp_replacement) if len(cand) < num_fp else cand[:num_fp]
        else:
            others = fp_pool[(fp_owner != c) & free[fp_pool]]
            cand = others[top_wrong[others] == c]
            if len(cand) >= num_fp:
                fps = _draw(py_rng, cand, num_fp, fp_replacement)
            else:
                rest = others[top_wrong[others] != c]
                rest = rest[np.argsort(-zs_probs[rest, c], kind="stable")]
                fps = cand.tolist() + rest[:num_fp - len(cand)].tolist()
        pool = clean[c]
        pos = pos_rng.choice(len(pool), size=shots, replace=len(pool) < shots)
        picked = [pool[p] for p in pos]
        picked[:num_fp] = fps
        free[fps] = False
        out_idx += picked
        out_lab += [c] * shots
    idx, lab = np.array(out_idx, dtype=np.int64), np.array(out_lab, dtype=np.int64)
    if dedup:
        _, first = np.unique(idx, return_index=True)
        keep = np.sort(first)
        idx, lab = idx[keep], lab[keep]
    return FewShotSelection(idx, lab, true_labels[idx])


def average_probs(probs: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """UPL*: softmax probabilities averaged over several CLIP models before selection."""
    if isinstance(probs, np.ndarray) and probs.ndim == 2:
        return probs
    return np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in probs]), axis=0)


def upl_select_topk(probs, k: int = 16, true_labels=None) -> FewShotSelection:
    """UPL: each image gets its arg-max pseudo-label (used once); per predicted class the k most
    confident images are kept (fewer if fewer are predicted)."""
    probs = average_probs(probs)
    pseudo, conf = probs.argmax(1), probs.max(1)
    idx = []
    for c in range(probs.shape[1]):
        members = np.flatnonzero(pseudo == c)
        order = members[np.argsort(-conf[members], kind="stable")]
        idx += order[:k].tolist()
    idx = np.array(idx, dtype=np.int64)
    true = np.asarray(true_labels)[idx] if true_labels is not None else pseudo[idx]
    return FewShotSelection(idx, pseudo[idx], true)


def random_k_per_class(probs, k: int = 16, seed: int = 1, true_labels=None) -> FewShotSelection:
    """Robust UPL: per predicted class, k images drawn at random (without replacement; all of them
    if fewer) among those CLIP assigns to it."""
    probs = average_probs(probs)
    pseudo = probs.argmax(1)
    rng = np.random.default_rng(seed)
    idx = []
    for c in range(probs.shape[1]):
        members = np.flatnonzero(pseudo == c)
        if len(members) > k:
            members = np.sort(rng.choice(members, size=k, replace=False))
        idx += members.tolist()
    idx = np.array(idx, dtype=np.int64)
    true = np.asarray(true_labels)[idx] if true_labels is not None else pseudo[idx]
    return FewShotSelection(idx, pseudo[idx], true)

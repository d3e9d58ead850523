"""The noisy few-shot sampler (PTNL's official one and its pair-flip / confusion variants) and UPL's selections."""
import math
import random

import numpy as np
import pytest

from projects.ptnl.noise import (num_fp_for, random_k_per_class, sample_noisy_fewshot, split_pools,
                                 upl_select_topk)


def labels(num_classes=6, per_class=(40, 37, 50, 33, 45, 41), seed=0):
    y = np.concatenate([np.full(n, c) for c, n in zip(range(num_classes), per_class)])
    return np.random.default_rng(seed).permutation(y)  # classes interleaved, as in split files


@pytest.mark.parametrize("noise_type", ["random", "pairflip"])
@pytest.mark.parametrize("num_fp", [0, 2, 4, 8])
def test_exact_wrong_count_per_class_and_never_the_true_label(noise_type, num_fp):
    y = labels()
    clean, fp = split_pools(y, 6)
    sel = sample_noisy_fewshot(y, 6, shots=16, num_fp=num_fp, seed=3, noise_type=noise_type,
                               fp_replacement=False, dedup=False)
    assert len(sel) == 6 * 16
    for c in range(6):
        mine = sel.labels == c
        assert mine.sum() == 16
        wrong = mine & (sel.true_labels != c)
        assert wrong.sum() == num_fp                        # exactly num_fp wrong shots
        assert set(sel.indices[mine & ~wrong]) <= set(clean[c])   # clean shots from the first half
        assert not set(sel.indices[wrong]) & set(clean[c])
        for i in sel.indices[wrong]:
            assert i in set(np.concatenate(fp)) and y[i] != c      # FP from other classes' second halves
    assert np.all(y[sel.indices] == sel.true_labels)
    assert len(set(sel.indices[sel.labels != sel.true_labels])) == 6 * num_fp   # an FP image is used once
    assert sel.noise_rate == pytest.approx(num_fp / 16)


def test_official_mode_draws_with_replacement_and_collapses_duplicates():
    y = labels(per_class=(10, 9, 12, 8, 11, 10))  # small pools: duplicate draws are likely
    sel = sample_noisy_fewshot(y, 6, shots=16, num_fp=8, seed=1)
    assert len(np.unique(sel.indices)) == len(sel.indices)
    for c in range(6):
        mine = sel.labels == c
        wrong = (mine & (sel.true_labels != c)).sum()
        assert 1 <= wrong <= 8 and mine.sum() <= 16
    assert np.all(sel.labels[sel.labels != sel.true_labels] != sel.true_labels[sel.labels != sel.true_labels])


def official_noisy_selection(img_paths, gt_label_dict, K, random_seed, num_fp, py_random):
    """CEWu/PTNL ``select_top_k_similarity_per_class_with_noisy_label`` (trainers/utils.py), re-written
    here from a reading of it to pin our sampler to it. ``py_random`` stands in for the global
    ``random`` module the official code calls (its state there depends on what ran before).
    Returns the official dict path -> label and, per class, the K paths before the dict collapses them."""
    ids = gt_label_dict.values()
    per_class = {c: [] for c in range(len(set(ids)))}
    for path, label in gt_label_dict.items():
        per_class[label].append(path)
    position = {p: i for i, p in enumerate(img_paths)}
    rng = np.random.default_rng(seed=random_seed)            # once, before the class loops
    tp, fp, fp_all = {}, {}, []
    for c in list(set(ids)):
        members = [position[p] for p in per_class[c]]
        split = int(math.ceil(len(members) * 0.5))
        tp[c], fp[c] = members[:split], members[split:]
        fp_all.extend(members[split:])
    fp_all_set, chosen = set(fp_all), set()
    out, drawn = {}, {}
    for c in list(set(ids)):
        candidates = fp_all_set.difference(tp[c], fp[c], chosen)
        fp_ids = py_random.choices(list(candidates), k=num_fp)
        chosen.update(fp_ids)
        paths = img_paths[tp[c]]
        paths = paths[rng.choice(len(paths), size=K, replace=len(paths) < K)]
        for i in range(num_fp):
            paths[i] = img_paths[fp_ids][i]
        drawn[c] = list(paths)
        for path in paths:
            out[path] = c
    return out, drawn


@pytest.mark.parametrize("num_fp", [0, 4, 8])
def test_sampler_matches_the_official_function(num_fp):
    """Positions from ONE generator shared by the classes in turn (equal pool sizes get different
    positions), FP candidates in the official set order, duplicates collapsing as the official dict."""
    y = labels(per_class=(40, 40, 40, 33, 45, 40))     # several classes with the same clean-pool size
    img_paths = np.array([f"img/{i:04d}.jpg" for i in range(len(y))])
    gt = {p: int(label) for p, label in zip(img_paths, y)}
    official, drawn = official_noisy_selection(img_paths, gt, K=16, random_seed=3, num_fp=num_fp,
                                               py_random=random.Random(3))
    raw = sample_noisy_fewshot(y, 6, shots=16, num_fp=num_fp, seed=3, dedup=False)
    for c in range(6):
        assert [img_paths[i] for i in raw.indices[raw.labels == c]] == drawn[c]
    sel = sample_noisy_fewshot(y, 6, shots=16, num_fp=num_fp, seed=3)
    assert {img_paths[i]: int(lab) for i, lab in zip(sel.indices, sel.labels)} == official
    firsts = [tuple(raw.indices[raw.labels == c][num_fp:]) for c in (0, 1, 2, 5)]
    positions = [tuple(np.searchsorted(np.flatnonzero(y == c), f)) for c, f in zip((0, 1, 2, 5), firsts)]
    assert len(set(positions)) == 4                   # the bug was: the same positions for equal pools


def test_deterministic_per_seed():
    y = labels()
    a = sample_noisy_fewshot(y, 6, 16, 4, seed=2)
    b = sample_noisy_fewshot(y, 6, 16, 4, seed=2)
    c = sample_noisy_fewshot(y, 6, 16, 4, seed=3)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.indices, c.indices)


def test_pairflip_maps_class_c_plus_1_to_c():
    y = labels()
    sel = sample_noisy_fewshot(y, 6, 16, 4, seed=1, noise_type="pairflip", fp_replacement=False, dedup=False)
    wrong = sel.labels != sel.true_labels
    assert wrong.sum() == 6 * 4
    assert np.all(sel.true_labels[wrong] == (sel.labels[wrong] + 1) % 6)


def test_confusion_noise_takes_the_class_clip_confuses_most():
    y = labels()
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(6), size=len(y))
    sel = sample_noisy_fewshot(y, 6, 16, 2, seed=1, noise_type="confusion", zs_probs=probs,
                               fp_replacement=False, dedup=False)
    masked = probs.copy()
    masked[np.arange(len(y)), y] = -1
    wrong = sel.labels != sel.true_labels
    assert wrong.sum() == 12
    assert np.all(masked[sel.indices[wrong]].argmax(1) == sel.labels[wrong])
    with pytest.raises(ValueError, match="zero-shot"):
        sample_noisy_fewshot(y, 6, 16, 2, noise_type="confusion")


def test_noise_rate_must_give_whole_shots():
    assert num_fp_for(0.5, 16) == 8 and num_fp_for(0.125, 16) == 2
    with pytest.raises(ValueError, match="whole number"):
        num_fp_for(0.3, 16)


def test_upl_picks_the_most_confident_per_predicted_class():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=200)
    true = rng.integers(0, 4, 200)
    sel = upl_select_topk(probs, k=5, true_labels=true)
    pseudo, conf = probs.argmax(1), probs.max(1)
    for c in range(4):
        members = np.flatnonzero(pseudo == c)
        expect = set(members[np.argsort(-conf[members])][:5])
        assert set(sel.indices[sel.labels == c]) == expect
        assert conf[list(expect)].min() >= np.sort(conf[members])[::-1][min(5, len(members)) - 1]
    assert np.array_equal(sel.true_labels, true[sel.indices])
    # averaged over several models (UPL*) before selecting
    probs2 = rng.dirichlet(np.ones(4), size=200)
    both = upl_select_topk([probs, probs2], k=5)
    assert np.array_equal(both.labels, ((probs + probs2) / 2).argmax(1)[both.indices])


def test_robust_upl_draws_k_random_members_of_each_predicted_class():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=120)
    probs[:3, 3] = 5  # class 3 predicted for few images only
    probs = probs / probs.sum(1, keepdims=True)
    pseudo = probs.argmax(1)
    a, b = random_k_per_class(probs, k=6, seed=1), random_k_per_class(probs, k=6, seed=2)
    for c in range(4):
        members = set(np.flatnonzero(pseudo == c))
        got = set(a.indices[a.labels == c])
        assert got <= members and len(got) == min(6, len(members))
    assert set(a.indices) != set(b.indices)

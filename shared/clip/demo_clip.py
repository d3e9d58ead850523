"""The demos' stand-in for OpenAI's CLIP, one copy and one cache for every CLIP demo (PTNL, Patch
Ranking): ``demo-clip-fmnist`` (ViT 28 px / patch 7, 3 layers, width 96; text transformer 3 layers,
width 96, context 24, QuickGELU; 64-d embeddings, ``model_configs/demo-clip-fmnist.json``) trained
from scratch on Fashion-MNIST image/caption pairs.

    path = ensure_demo_clip()                  # trains it once (minutes, CPU), then reuses the cache
    bundle = load_demo_clip()                  # = load_clip(ARCH, ensure_demo_clip())

Data: the first 50,000 Fashion-MNIST train images (``PRETRAIN_RANGE``; the demos' few-shot and test
images come from the other 10,000 train images and the test split), each captioned with its class
name in one of ``CAPTION_TEMPLATES``. Loss: CLIP's symmetric image-text contrastive loss with a
learned temperature, except that every pair of the same class counts as a positive (soft targets
spread over them): with captions built from 10 class names a batch holds many pairs of one class,
and treating them as negatives would teach the model contradictions. AdamW, linear warm-up then
cosine; random shift and flip of the images. The weights are an open_clip state dict that
``shared.clip.load_clip`` reads.

The cache: one file, ``$DEMO_CLIP_CACHE`` or ``<repo>/data/demo_clip/demo-clip-fmnist.pt``, with a
JSON sidecar holding the recipe it was trained with; a cache trained with another recipe is
retrained (a file lock keeps two demos started at once from training it twice).

Named variants (``VARIANTS``), each in its own cache file beside the default one
(``demo-clip-fmnist-<variant>.pt``), the default recipe untouched:

- ``looks`` (the PTNL demo's): every pre-training image is shown in one of five looks (``LOOKS``:
  plain, dark, inverted, small, rotated; uniformly), captioned with the class name and the look's
  word ("a dark photo of a coat."; plain images keep ``CAPTION_TEMPLATES``), and a pair is a
  positive only when class and look both match. With class-only captions the text tower learns to
  read the class name and nothing else, so a learned prompt context has nothing to act on; here the
  words around the class name change the embedding, as in real CLIP.

    path = ensure_demo_clip(variant="looks")   # data/demo_clip/demo-clip-fmnist-looks.pt
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.checkpoint import atomic_torch_save, atomic_write_text
from shared.clip.models import ClipBundle, load_clip
from shared.clip.transforms import CLIP_MEAN, CLIP_STD
from shared.data import fashion_mnist
from shared.logging import progress

ARCH = "demo-clip-fmnist"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ENV = "DEMO_CLIP_CACHE"
# CoOp-style class names (the few-shot datasets' folder names), in Fashion-MNIST's label order
CLASSNAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
PRETRAIN_RANGE = (0, 50000)
CAPTION_TEMPLATES = [
    "a photo of a {}.", "a {}.", "a picture of the {}.", "a black and white photo of a {}.",
    "a low resolution photo of a {}.", "an image of a {}.", "a close-up photo of the {}.",
    "a grayscale picture of a {}.",
]
# The recipe of the cached model; changing any value retrains the cache.
RECIPE = {"steps": 600, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.1, "warmup": 60, "seed": 0,
          "images": PRETRAIN_RANGE[1] - PRETRAIN_RANGE[0]}


def _dark(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) * 0.35).round().astype(np.uint8)


def _small(x: np.ndarray) -> np.ndarray:
    half = x.reshape(-1, 14, 2, 14, 2).astype(np.float32).mean((2, 4)).round().astype(np.uint8)
    out = np.zeros_like(x)
    out[:, 7:21, 7:21] = half
    return out


# Image looks of the "looks" variant: a visible, deterministic change of the uint8 images [N, 28, 28]
# and the words its captions use for it ("plain": the images as they are, captioned with CAPTION_TEMPLATES).
LOOKS = {
    "plain": (lambda x: x, None),
    "dark": (_dark, "dark"),
    "inverted": (lambda x: 255 - x, "inverted"),
    "small": (_small, "small"),
    "rotated": (lambda x: np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2))), "rotated"),
}
LOOK_TEMPLATES = ["a {a} photo of a {c}.", "a {a} picture of the {c}.", "an image of a {a} {c}.",
                  "a {a} black and white photo of a {c}.", "a {a} low resolution photo of a {c}.",
                  "a close-up {a} photo of the {c}.", "the {c}, {a}.", "a grayscale {a} picture of a {c}."]
# Named variants of the recipe, each with its own cache file (``default_path(variant)``); the default
# demo CLIP (variant None) is RECIPE alone.
VARIANTS = {
    # every image in one of LOOKS (uniform), its caption naming the look, and a pair a positive only
    # when class and look both match: the text tower must read the words around the class name
    "looks": {"looks": list(LOOKS)},
}


def default_path(variant: str | None = None) -> Path:
    """The cache location: ``$DEMO_CLIP_CACHE`` if set, else ``<repo>/data/demo_clip/demo-clip-fmnist.pt``;
    a named ``variant`` (``VARIANTS``) has its own file, ``demo-clip-fmnist-<variant>.pt`` beside it."""
    env = os.environ.get(CACHE_ENV)
    base = Path(env) if env else REPO_ROOT / "data" / "demo_clip" / f"{ARCH}.pt"
    if variant is None:
        return base
    if variant not in VARIANTS:
        raise ValueError(f"unknown demo CLIP variant {variant!r}; known: {sorted(VARIANTS)}")
    return base.with_name(f"{base.stem}-{variant}{base.suffix}")


def apply_look(x: np.ndarray, look: str) -> np.ndarray:
    """uint8 images [N, 28, 28] in the look ``look`` (a key of ``LOOKS``)."""
    if look not in LOOKS:
        raise ValueError(f"unknown look {look!r}; known: {sorted(LOOKS)}")
    return LOOKS[look][0](np.asarray(x, dtype=np.uint8))


def look_captions(look: str) -> list[list[str]]:
    """look_captions(look)[class][template]: the captions of images in ``look``."""
    if look not in LOOKS:
        raise ValueError(f"unknown look {look!r}; known: {sorted(LOOKS)}")
    adj = LOOKS[look][1]
    if adj is None:
        return captions()
    return [[t.format(a=adj, c=n.replace("_", " ")).replace("a inverted", "an inverted") for t in LOOK_TEMPLATES]
            for n in CLASSNAMES]


def pretrain_pairs(data_root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], class labels [N]) for the pre-training: Fashion-MNIST train[0:50000]."""
    x, y = fashion_mnist.load("train", data_root)
    a, b = PRETRAIN_RANGE
    return x[a:b], y[a:b]


def captions() -> list[list[str]]:
    """captions()[class][template]: every caption the pre-training uses."""
    return [[t.format(n.replace("_", " ")) for t in CAPTION_TEMPLATES] for n in CLASSNAMES]


def images_to_tensor(x: np.ndarray, augment: bool = False, g: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [B, 28, 28] -> CLIP-normalised float [B, 3, 28, 28]; ``augment``: random shift (pad 2,
    crop 28) and horizontal flip."""
    t = torch.from_numpy(np.ascontiguousarray(x)).float().div(255).unsqueeze(1)
    if augment:
        t = F.pad(t, (2, 2, 2, 2))
        b = t.shape[0]
        dx, dy = torch.randint(0, 5, (2, b), generator=g)
        t = torch.stack([t[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(b)])
        flip = torch.rand(b, generator=g) < 0.5
        t[flip] = t[flip].flip(-1)
    t = t.expand(-1, 3, -1, -1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (t - mean) / std


def class_positive_clip_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor,
                             logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss over normalised ``img`` / ``txt`` [B, D] where pairs of the same
    class are all positives (targets uniform over them)."""
    logits = logit_scale * img @ txt.t()
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean())


def pretrain(out: str | Path, steps: int = RECIPE["steps"], batch_size: int = RECIPE["batch_size"],
             lr: float = RECIPE["lr"], weight_decay: float = RECIPE["weight_decay"], warmup: int = RECIPE["warmup"],
             seed: int = RECIPE["seed"], data_root: str | None = None, max_images: int | None = None,
             minutes: float | None = None, threads: int | None = 1, looks: list[str] | None = None) -> dict:
    """Train the demo CLIP for ``steps`` steps (or until ``minutes`` of wall time) and save its state
    dict to ``out``; returns a summary. ``max_images``: use only the first N pairs (tests).
    ``threads``: torch intra-op threads (1 is fastest for this small model on a shared CPU).
    ``looks``: None, the images as they are, captions naming the class, same-class pairs positives;
    else names from ``LOOKS``: each image drawn in one of them (uniformly), captioned with a caption
    of its look (``look_captions``), and positives are pairs of the same class and look."""
    if looks is not None:
        unknown = sorted(set(looks) - set(LOOKS))
        if unknown or not looks:
            raise ValueError(f"unknown looks {unknown} (known: {sorted(LOOKS)})" if unknown else "looks is empty")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    bundle = load_clip(ARCH, None)
    model, tok = bundle.model, bundle.tokenizer
    model.train()
    x_all, y_all = pretrain_pairs(data_root)
    if max_images:
        x_all, y_all = x_all[:max_images], y_all[:max_images]
    cap_tokens = torch.stack([tok(c) for c in captions()])  # [C, T, L]
    if looks is not None:
        look_tokens = [torch.stack([tok(c) for c in look_captions(k)]) for k in looks]  # per look [C, T_k, L]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, min(warmup, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    t0, step, losses = time.time(), 0, []
    bar = progress(total=steps, desc="pretrain demo CLIP")
    order = rng.permutation(len(x_all))
    cursor = 0
    while step < steps and (minutes is None or time.time() - t0 < minutes * 60):
        if cursor + batch_size > len(order):  # epochs over the pairs, reshuffled
            order, cursor = rng.permutation(len(x_all)), 0
        idx = np.sort(order[cursor:cursor + batch_size])
        cursor += batch_size
        y = torch.from_numpy(y_all[idx]).long()
        if looks is None:
            images = images_to_tensor(x_all[idx], True, g)
            tmpl = torch.randint(0, len(CAPTION_TEMPLATES), (len(idx),), generator=g)
            img = F.normalize(model.encode_image(images), dim=-1)
            # the captions are class x template: encode the unique ones once per step, then index
            txt = F.normalize(model.encode_text(cap_tokens.flatten(0, 1)), dim=-1).view(*cap_tokens.shape[:2], -1)
            loss = class_positive_clip_loss(img, txt[y, tmpl], y, model.logit_scale.exp().clamp(max=100))
        else:
            look = torch.randint(0, len(looks), (len(idx),), generator=g)
            x = x_all[idx].copy()
            tokens = []
            for k, name in enumerate(looks):
                sel = (look == k).numpy()
                x[sel] = apply_look(x[sel], name)
                tmpl = torch.randint(0, look_tokens[k].shape[1], (int(sel.sum()),), generator=g)
                tokens.append((np.flatnonzero(sel), look_tokens[k][y[sel], tmpl]))
            order_in_batch = np.concatenate([i for i, _ in tokens])
            toks = torch.cat([t for _, t in tokens])[np.argsort(order_in_batch)]
            img = F.normalize(model.encode_image(images_to_tensor(x, True, g)), dim=-1)
            txt = F.normalize(model.encode_text(toks), dim=-1)
            loss = class_positive_clip_loss(img, txt, y * len(looks) + look, model.logit_scale.exp().clamp(max=100))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-25:]):.3f}", refresh=False)
    bar.close()
    model.eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(model.state_dict(), out)
    return {"steps": step, "seconds": time.time() - t0, "final_loss": float(np.mean(losses[-25:])),
            "images_seen": step * batch_size, "path": str(out)}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def cached_recipe(path: str | Path | None = None) -> dict | None:
    """The recipe the cache at ``path`` was trained with (None when there is no complete cache)."""
    path = Path(path) if path else default_path()
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()):
        return None
    return json.loads(side.read_text()).get("recipe")


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def variant_recipe(variant: str | None = None, **recipe) -> dict:
    """The full recipe of ``variant`` (None: the default demo CLIP) updated by ``recipe``."""
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown demo CLIP variant {variant!r}; known: {sorted(VARIANTS)}")
    base = {**RECIPE, **VARIANTS.get(variant, {})}
    unknown = set(recipe) - set(base)
    if unknown:
        raise TypeError(f"unknown recipe keys {sorted(unknown)}; valid: {sorted(base)}")
    return {**base, **recipe}


def ensure_demo_clip(path: str | Path | None = None, data_root: str | None = None, verbose: bool = True,
                     variant: str | None = None, **recipe) -> Path:
    """The cached demo CLIP's weights file, trained first if it is missing or was trained with
    another recipe (``RECIPE``, with ``VARIANTS[variant]`` for a named variant, updated by
    ``recipe``). Returns the path (default: ``default_path(variant)``)."""
    want = variant_recipe(variant, **recipe)
    path = Path(path) if path else default_path(variant)
    with _lock(path):
        if cached_recipe(path) == want:
            return path
        if verbose:
            why = "missing" if not path.is_file() else "trained with another recipe"
            print(f"demo CLIP cache {path} {why}: training it ({want['steps']} steps)", flush=True)
        args = {k: v for k, v in want.items() if k != "images"}
        info = pretrain(path, data_root=data_root, max_images=want["images"], **args)
        atomic_write_text(_sidecar(path), json.dumps({"recipe": want, "arch": ARCH, "train": info}, indent=2) + "\n")
        if verbose:
            print(f"trained the demo CLIP: {info['steps']} steps in {info['seconds']:.0f} s -> {path}", flush=True)
    return path


def load_demo_clip(path: str | Path | None = None, device: str | torch.device = "cpu",
                   data_root: str | None = None, variant: str | None = None) -> ClipBundle:
    """The demo CLIP (trained into the cache first if needed), eval mode, with its transform and tokenizer."""
    return load_clip(ARCH, str(ensure_demo_clip(path, data_root, variant=variant)), device=device)


def zero_shot_accuracy(bundle: ClipBundle, x: np.ndarray, y: np.ndarray, template: str = "a photo of a {}.",
                       batch_size: int = 500) -> float:
    """Top-1 zero-shot accuracy (%) of ``bundle`` on uint8 images ``x`` [N, 28, 28] with labels ``y``."""
    model, tok = bundle.model, bundle.tokenizer
    with torch.no_grad():
        t = F.normalize(model.encode_text(tok([template.format(n.replace("_", " ")) for n in CLASSNAMES])).float(), dim=-1)
        correct = 0
        for i in range(0, len(x), batch_size):
            f = F.normalize(model.encode_image(images_to_tensor(x[i:i + batch_size])).float(), dim=-1)
            correct += int(((f @ t.t()).argmax(-1).numpy() == y[i:i + batch_size]).sum())
    return 100.0 * correct / len(x)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help=f"weights file (default: the cache, {default_path()})")
    p.add_argument("--steps", type=int, default=RECIPE["steps"])
    p.add_argument("--variant", default=None, choices=sorted(VARIANTS), help="a named variant (own cache file)")
    p.add_argument("--eval", action="store_true", help="print zero-shot accuracy on Fashion-MNIST test")
    a = p.parse_args()
    path = ensure_demo_clip(a.out, variant=a.variant, steps=a.steps)
    print(path, cached_recipe(path))
    if a.eval:
        xt, yt = fashion_mnist.load("test")
        bundle = load_clip(ARCH, str(path))
        for look in (["plain"] if a.variant is None else cached_recipe(path)["looks"]):
            xl = apply_look(xt, look)
            named = look_captions(look)[0][0].replace(CLASSNAMES[0].replace("_", " "), "{}")
            print(f"zero-shot accuracy on the 10,000 test images, look {look}: "
                  f"{zero_shot_accuracy(bundle, xl, yt):.1f}% ('a photo of a {{}}.'), "
                  f"{zero_shot_accuracy(bundle, xl, yt, named):.1f}% ({named!r})")

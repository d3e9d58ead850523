"""Datasets and transforms: ImageNet-1k, the ImageNet-100 subset (CMC list, as the official code),
and Fashion-MNIST for the CPU demo.

Training view (official): RandomResizedCrop(grid * (patch + gap), scale (min_crop, 1), bicubic),
horizontal flip, normalisation; one view, no colour jitter. Evaluation: Resize(eval / 0.875) +
CenterCrop(eval), eval = grid * patch (224), bicubic. Items are ``{"views", "label", "index"}`` and
take ``(index, seed)`` from ``ResumableSampler`` so a resumed run redraws the same crops.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from torchvision import transforms as T

from shared.data import fashion_mnist
from shared.data.image_datasets import ArrayImages, FolderImages, ImageList
from shared.data.index import require_dir
from shared.data.ssl_augment import IMAGENET_MEAN, IMAGENET_STD

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
IN100_LIST = Path(__file__).with_name("imagenet100.txt")
IMAGENET_HOW = ("ImageNet in the ImageFolder layout: <data.root>/train/<wnid>/*.JPEG, and <data.root>/val/<wnid>/* "
                "or the flat val/ILSVRC2012_val_XXXXXXXX.JPEG with anno/ILSVRC2012_validation_ground_truth.txt and "
                "anno/meta.mat (ILSVRC2012 devkit); see projects/latent_mim/README.md, Data.")
DATASETS = ("imagenet", "imagenet100", "fashion_mnist")


def _stats(cfg):
    return (FMNIST_MEAN, FMNIST_STD) if cfg.data.dataset == "fashion_mnist" else (IMAGENET_MEAN, IMAGENET_STD)


def train_crop_size(cfg) -> int:
    m = cfg.model
    patch = _patch_size(cfg)
    return m.grid_size * (patch + m.patch_gap)


def eval_size(cfg) -> int:
    return cfg.model.grid_size * _patch_size(cfg)


def _patch_size(cfg) -> int:
    from projects.latent_mim.encoder import SIZES

    return cfg.model.patch_size if cfg.model.arch == "custom" else SIZES[cfg.model.arch]["patch_size"]


def train_transform(cfg):
    mean, std = _stats(cfg)
    return T.Compose([T.RandomResizedCrop(train_crop_size(cfg), scale=(cfg.data.min_crop, 1.0),
                                          interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def eval_transform(cfg):
    mean, std = _stats(cfg)
    size, ratio = eval_size(cfg), cfg.data.eval_crop_ratio
    resize = [T.Resize(int(size / ratio), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)] if ratio \
        else [T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC)]
    return T.Compose([*resize, T.ToTensor(), T.Normalize(mean, std)])




def devkit_ids(root: Path) -> dict[str, int]:
    """wnid -> ILSVRC2012_ID - 1 from the devkit's anno/meta.mat (the official label order)."""
    import scipy.io

    meta = root / "anno" / "meta.mat"
    if not meta.is_file():
        raise FileNotFoundError(f"data.label_order=devkit needs {meta} (ILSVRC2012 devkit). " + IMAGENET_HOW)
    synsets = scipy.io.loadmat(str(meta))["synsets"]
    return {s[0][1][0]: int(s[0][0][0][0]) - 1 for s in synsets if int(s[0][0][0][0]) <= 1000}


def read_class_list(path: Path) -> list[str]:
    ids = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    bad = [i for i in ids if not (len(i) == 9 and i[0] == "n" and i[1:].isdigit())]
    if bad:
        raise ValueError(f"{path}: not WordNet ids: {bad[:5]}")
    return ids


def _imagenet_split(cfg, split: str, transform) -> Dataset:
    root = require_dir(cfg.data.root, "ImageNet root", IMAGENET_HOW)
    folder = root / split
    layout = cfg.data.val_layout if split == "val" else "folder"
    if layout == "auto":
        layout = "flat" if (root / "anno" / "ILSVRC2012_validation_ground_truth.txt").is_file() and \
            any(folder.glob("ILSVRC2012_val_*")) else "folder"
    if layout == "folder":
        ds = FolderImages(folder, transform, IMAGENET_HOW)
        samples = [(p, ds.classes[y]) for p, y in ds.samples]  # (path, wnid)
    elif layout == "flat":
        gt = root / "anno" / "ILSVRC2012_validation_ground_truth.txt"
        if not gt.is_file():
            raise FileNotFoundError(f"data.val_layout=flat needs {gt}. " + IMAGENET_HOW)
        ids = [int(x) - 1 for x in gt.read_text().split()]
        id_to_wnid = {v: k for k, v in devkit_ids(root).items()}
        samples = [(str(folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG"), id_to_wnid[y]) for i, y in enumerate(ids)]
    else:
        raise ValueError(f"data.val_layout must be auto, folder or flat, got {layout!r}")
    if cfg.data.dataset == "imagenet100":
        keep = read_class_list(IN100_LIST)
        found = {w for _, w in samples}
        missing = [w for w in keep if w not in found]
        if missing:
            raise FileNotFoundError(f"ImageNet-100: {len(missing)} of its classes are not in {folder} "
                                    f"(first: {missing[:3]})")
        to_label = {w: i for i, w in enumerate(keep)}  # labels in the list's order, as official
    elif cfg.data.label_order == "devkit":
        to_label = devkit_ids(root)
    elif cfg.data.label_order == "sorted":
        to_label = {w: i for i, w in enumerate(sorted({w for _, w in samples}))}
    else:
        raise ValueError(f"data.label_order must be sorted or devkit, got {cfg.data.label_order!r}")
    return ImageList([(p, to_label[w]) for p, w in samples if w in to_label], transform)


def _subset(n: int, size, seed: int) -> np.ndarray:
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def _take(ds, keep: np.ndarray):
    if isinstance(ds, ArrayImages):
        return ArrayImages(ds.images[keep], ds.labels.numpy()[keep], ds.transform)
    return ImageList([ds.samples[i] for i in keep], ds.transform)


def dataset(cfg, split: str, train_aug: bool, size=None, seed_offset: int = 0) -> Dataset:
    """``split``: train | val. ``train_aug``: the pretraining view, else the evaluation transform."""
    d = cfg.data
    if d.dataset not in DATASETS:
        raise ValueError(f"data.dataset must be one of {DATASETS}, got {d.dataset!r}")
    tf = train_transform(cfg) if train_aug else eval_transform(cfg)
    if d.dataset == "fashion_mnist":
        if cfg.model.in_chans != 1:
            raise ValueError("fashion_mnist images have 1 channel: set model.in_chans=1")
        images, labels = fashion_mnist.load("train" if split == "train" else "test", d.root or None,
                                            download=d.download)
        ds = ArrayImages(images, labels, tf)
    else:
        if cfg.model.in_chans != 3:
            raise ValueError(f"{d.dataset} images are RGB: set model.in_chans=3")
        ds = _imagenet_split(cfg, split, tf)
    if len(ds) == 0:
        raise ValueError(f"{d.dataset} {split}: no images found under {d.root}")
    return _take(ds, _subset(len(ds), size, cfg.run.seed + seed_offset)) if size is not None else ds


def num_classes(cfg) -> int:
    return {"fashion_mnist": 10, "imagenet100": 100, "imagenet": 1000}[cfg.data.dataset]

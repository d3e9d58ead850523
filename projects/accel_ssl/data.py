"""Datasets of the accel_ssl runs: ImageNet-1k (ImageFolder train/ and val/) or Fashion-MNIST,
with the framework's augmentation (two MoCo v3 views, or DINO multi-crop)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.data import fashion_mnist
from shared.data.image_datasets import ArrayImages, FolderImages
from shared.data.ssl_augment import IMAGENET_MEAN, IMAGENET_STD, dino_multicrop, eval_transform, moco_two_views

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
IMAGENET_HOW = ("ImageNet-1k in the ImageFolder layout: <data.root>/train/<wnid>/*.JPEG and <data.root>/val/<wnid>/*.JPEG "
                "(see projects/accel_ssl/README.md, 'Data').")


def _stats(cfg):
    return (FMNIST_MEAN, FMNIST_STD, False) if cfg.data.dataset == "fashion_mnist" else (IMAGENET_MEAN, IMAGENET_STD, True)


def train_transform(cfg):
    mean, std, color = _stats(cfg)
    d = cfg.data
    if cfg.method.name == "dino":
        return dino_multicrop(d.img_size, d.local_size, d.n_local_crops, tuple(d.global_scale), tuple(d.local_scale),
                              mean, std, color)
    return moco_two_views(d.img_size, d.crop_min, mean, std, color)


def view_sizes(cfg) -> list[int]:
    d = cfg.data
    if cfg.method.name == "dino":
        return [d.img_size] * 2 + [d.local_size] * d.n_local_crops
    return [d.img_size] * 2


def _subset(n: int, size, seed: int) -> np.ndarray:
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def _fmnist_arrays(cfg, split: str):
    return fashion_mnist.load(split, cfg.data.root if cfg.data.root else None, download=cfg.data.download)


def pretrain_set(cfg):
    d = cfg.data
    if d.dataset == "fashion_mnist":
        images, labels = _fmnist_arrays(cfg, "train")
        keep = _subset(len(images), d.train_subset, cfg.run.seed)
        return ArrayImages(images[keep], labels[keep], train_transform(cfg))
    if d.dataset == "imagenet":
        return FolderImages(Path(d.root) / "train", train_transform(cfg), IMAGENET_HOW)
    raise ValueError(f"data.dataset must be imagenet or fashion_mnist, got {d.dataset!r}")


def eval_sets(cfg, train_size=None, test_size=None):
    """(train, test) datasets with the deterministic evaluation transform, for k-NN / linear probe."""
    d = cfg.data
    mean, std, _ = _stats(cfg)
    if d.dataset == "fashion_mnist":
        import torchvision.transforms as T

        tf = T.Compose([T.Resize(d.img_size, interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                        T.Normalize(mean, std)])
        out = []
        for split, size in (("train", train_size), ("test", test_size)):
            images, labels = _fmnist_arrays(cfg, split)
            keep = _subset(len(images), size, cfg.run.seed + 1)
            out.append(ArrayImages(images[keep], labels[keep], tf))
        return out
    tf = eval_transform(d.img_size, mean=mean, std=std)
    train = FolderImages(Path(d.root) / "train", tf, IMAGENET_HOW)
    test = FolderImages(Path(d.root) / "val", tf, IMAGENET_HOW)
    for ds, size in ((train, train_size), (test, test_size)):
        ds.samples = [ds.samples[i] for i in _subset(len(ds.samples), size, cfg.run.seed + 1)]
    return train, test


def num_classes(cfg) -> int:
    return 10 if cfg.data.dataset == "fashion_mnist" else 1000

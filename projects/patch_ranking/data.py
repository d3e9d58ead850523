"""Datasets, CLIP loading and the image subsets each phase uses.

- the dataset: one of CoOp's (through ``shared.clip.load_dataset``, official layout and split files)
  or a custom CoOp-style one (the demo's Fashion-MNIST);
- golden rankings are made on a seeded subset of the train split (``golden.train_images``) and, for
  the oracle row and the predictor's overlap metric, of the test split (``golden.test_images``);
- Phase III trains on ``prompts.shots`` images per class drawn (seeded) from the train split.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from shared.clip.datasets import Datum, FewShotDataset, ImageListDataset, load_dataset
from shared.clip.models import ClipBundle, load_clip
from shared.clip.transforms import clip_test_transform, coop_train_transform


def build_dataset(cfg) -> FewShotDataset:
    d = cfg.data
    return load_dataset(d.dataset, d.root, dataset_dir=d.dataset_dir, image_dir=d.image_dir, split_file=d.split_file,
                        template=d.template, readme="projects/patch_ranking/README.md")


def load_cfg_clip(cfg, device: torch.device | str = "cpu") -> ClipBundle:
    c = cfg.clip
    bundle = load_clip(c.arch, c.pretrained, precision=c.precision, device=device, quick_gelu=c.quick_gelu,
                       cache_dir=c.cache_dir)
    bundle.model.to(device)
    return bundle


def subset(items: list[Datum], n: int, seed: int) -> list[Datum]:
    """``n`` items drawn without replacement (seeded), in split order; n < 0 or n >= len: all of them."""
    if n < 0 or n >= len(items):
        return list(items)
    if n == 0:
        return []
    idx = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[i] for i in idx]


def few_shot(items: list[Datum], shots: int, seed: int) -> list[Datum]:
    """``shots`` images per class (fewer if a class has fewer), drawn with a seeded generator."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, d in enumerate(items):
        by_class.setdefault(d.label, []).append(i)
    out = []
    for c in sorted(by_class):
        idx = by_class[c]
        pick = rng.choice(len(idx), size=min(shots, len(idx)), replace=False)
        out += [items[idx[j]] for j in sorted(pick)]
    return out


def test_transform(size: int):
    return clip_test_transform(size)


def train_transform(cfg, size: int):
    return coop_train_transform(size, scale=tuple(cfg.data.train_scale), flip=bool(cfg.data.flip))


def loader(items: list[Datum], transform, batch_size: int, cfg, device: torch.device, shuffle: bool = False,
           sampler=None, drop_last: bool = False) -> DataLoader:
    return DataLoader(ImageListDataset(items, transform), batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=int(cfg.data.num_workers), pin_memory=device.type == "cuda",
                      drop_last=drop_last)

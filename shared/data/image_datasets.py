"""Image datasets for the SSL projects, with per-sample seeded transforms (ResumableSampler items).

- ``ImageFolder`` layout (ImageNet: <root>/train/<class>/*.JPEG, <root>/val/<class>/*), read with
  torchvision's folder scanner;
- in-memory uint8 arrays (Fashion-MNIST through ``shared.data.fashion_mnist``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from shared.data.images import load_image
from shared.data.index import require_dir
from shared.data.robust import BadSample
from shared.data.audio import MediaError


def seeded(transform: Callable, img, seed: int | None):
    """Apply a torchvision transform with its randomness fixed by ``seed`` (global RNG untouched)."""
    if seed is None:
        return transform(img)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(img)


class ArrayImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable):
        self.images, self.labels, self.transform = images, torch.as_tensor(labels), transform
        self.mode = "L" if images.ndim == 3 else "RGB"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item):
        idx, seed = item if isinstance(item, tuple) else (item, None)
        img = Image.fromarray(self.images[idx], mode=self.mode)
        return {"views": seeded(self.transform, img, seed), "label": self.labels[idx], "index": idx}


class ImageList(Dataset):
    """(path, label) pairs; unreadable images come back as BadSample."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        idx, seed = item if isinstance(item, tuple) else (item, None)
        path, label = self.samples[idx]
        try:
            img = load_image(path)
        except (MediaError, FileNotFoundError) as e:
            return BadSample(str(path), str(e))
        return {"views": seeded(self.transform, img, seed), "label": torch.tensor(label), "index": idx}


class FolderImages(ImageList):
    """<root>/<class>/<image>; classes sorted; unreadable images come back as BadSample."""

    EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG")

    def __init__(self, root: str | Path, transform: Callable, how_to_get: str = ""):
        from torchvision.datasets.folder import find_classes, make_dataset

        root = require_dir(root, "image folder", how_to_get)
        self.classes, class_to_idx = find_classes(str(root))
        super().__init__(make_dataset(str(root), class_to_idx, extensions=self.EXT), transform)

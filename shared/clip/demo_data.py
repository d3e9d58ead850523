"""The CLIP demos' few-shot dataset: real Fashion-MNIST images (found offline by
``shared.data.fashion_mnist``) written in CoOp's on-disk layout, ``<root>/fashion_mnist/images/<class>/<id>.png``
+ ``split_zhou_FashionMNIST.json`` (the official split format), so the demos read it with the same loader
as CoOp's datasets (``shared.clip.datasets``: ``dataset_dir=fashion_mnist``, ``image_dir=images``).

Train images come from Fashion-MNIST train images 50000.. and val images right after them per class, so
both are disjoint from the images the shared demo CLIP was pre-trained on
(``shared.clip.demo_clip.PRETRAIN_RANGE``); test images come from Fashion-MNIST's test split. Used by
the PTNL and Patch Ranking demos.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from shared.checkpoint import atomic_write_text
from shared.clip.demo_clip import CLASSNAMES, PRETRAIN_RANGE
from shared.data import fashion_mnist

DATASET_DIR = "fashion_mnist"
IMAGE_DIR = "images"
SPLIT_FILE = "split_zhou_FashionMNIST.json"


def write_fashion_mnist_coop(root: str | Path, n_train: int, n_val: int, n_test: int,
                             data_root: str | None = None) -> Path:
    """Write per class n_train / n_val / n_test images under ``<root>/fashion_mnist``; returns that folder.
    A dataset already there with the same sizes is kept as it is (images already on disk are not
    rewritten). ``data_root``: where to look for Fashion-MNIST's idx files (default: shared.data.fashion_mnist)."""
    ddir = Path(root) / DATASET_DIR
    split_path = ddir / SPLIT_FILE
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if split_path.is_file():
        meta = json.loads(split_path.read_text())
        if all(len(meta.get(s, [])) == n * len(CLASSNAMES) for s, n in sizes.items()):
            return ddir
    tr_x, tr_y = fashion_mnist.load("train", data_root)
    te_x, te_y = fashion_mnist.load("test", data_root)
    start = PRETRAIN_RANGE[1]
    split = {}
    for which in ("train", "val", "test"):
        x, y, offset = (te_x, te_y, 0) if which == "test" else (tr_x[start:], tr_y[start:], start)
        entries = []
        for c, name in enumerate(CLASSNAMES):
            idx = np.flatnonzero(y == c)
            idx = idx[n_train:n_train + n_val] if which == "val" else idx[:sizes[which]]
            if len(idx) < sizes[which]:
                raise ValueError(f"Fashion-MNIST has only {len(idx)} {which} images of {name}")
            for i in idx:
                rel = f"{name}/{'test' if which == 'test' else 'train'}_{offset + int(i):05d}.png"
                path = ddir / IMAGE_DIR / rel
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(x[i], mode="L").save(path)
                entries.append([rel, c, name])
        split[which] = entries
    atomic_write_text(split_path, json.dumps(split) + "\n")
    return ddir

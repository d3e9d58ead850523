"""The demo's data, from real Fashion-MNIST images (found offline by shared.data.fashion_mnist):

- a CoOp-layout few-shot dataset, ``<root>/fashion_mnist/images/<class>/<id>.png`` with a
  ``split_zhou_FashionMNIST.json`` in the official format, read by the same loader as CoOp's
  eleven datasets: train from Fashion-MNIST train images 50000.., val after it, test from its
  test split;
- the demo CLIP is pre-trained on the first 50,000 train images (disjoint from the few-shot
  dataset) with captions, in ``shared/clip/demo_clip.py``, which holds the class names and range.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from shared.checkpoint import atomic_write_text
from shared.clip.demo_clip import CLASSNAMES, PRETRAIN_RANGE
from shared.data import fashion_mnist

SPLIT_FILE = "split_zhou_FashionMNIST.json"


def write_fewshot_dataset(root: str | Path, n_train: int = 200, n_val: int = 20, n_test: int = 100,
                          data_root: str | None = None) -> Path:
    """Write the CoOp-layout dataset (per class n_train / n_val / n_test images); returns its folder.
    Re-running with the same sizes keeps the existing files."""
    ddir = Path(root) / "fashion_mnist"
    split_path = ddir / SPLIT_FILE
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if split_path.is_file():
        meta = json.loads(split_path.read_text())
        if all(len(meta[s]) == n * len(CLASSNAMES) for s, n in sizes.items()):
            return ddir
    tr_x, tr_y = fashion_mnist.load("train", data_root)
    te_x, te_y = fashion_mnist.load("test", data_root)
    start = PRETRAIN_RANGE[1]
    pools = {"train": (tr_x[start:], tr_y[start:], start, 0), "test": (te_x, te_y, 0, 0)}
    split = {}
    for which in ("train", "val", "test"):
        x, y, offset, _ = pools["test" if which == "test" else "train"]
        entries = []
        for c, name in enumerate(CLASSNAMES):
            idx = np.flatnonzero(y == c)
            if which == "val":
                idx = idx[n_train:n_train + n_val]
            else:
                idx = idx[:sizes[which]]
            if len(idx) < sizes[which]:
                raise ValueError(f"Fashion-MNIST has only {len(idx)} {which} images of {name}")
            for i in idx:
                rel = f"{name}/{'test' if which == 'test' else 'train'}_{offset + int(i):05d}.png"
                path = ddir / "images" / rel
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(x[i], mode="L").save(path)
                entries.append([rel, c, name])
        split[which] = entries
    atomic_write_text(split_path, json.dumps(split) + "\n")
    return ddir


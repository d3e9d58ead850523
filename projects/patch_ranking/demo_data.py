"""The demo's dataset: real Fashion-MNIST images written in CoOp's on-disk layout,
``<root>/fashion_mnist/images/<class>/<id>.png`` + ``split_zhou_FashionMNIST.json`` (official split
format), read by the same loader as CoOp's datasets. Train/val images come from Fashion-MNIST train
images 50000.. (disjoint from the 50,000 the shared demo CLIP was pre-trained on,
``shared.clip.demo_clip.PRETRAIN_RANGE``), test images from its test split."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from shared.checkpoint import atomic_write_text
from shared.clip.demo_clip import CLASSNAMES, PRETRAIN_RANGE
from shared.data import fashion_mnist

SPLIT_FILE = "split_zhou_FashionMNIST.json"


def write_fashion_mnist_coop(root: str | Path, n_train: int = 200, n_val: int = 10, n_test: int = 100,
                             data_root: str | None = None) -> Path:
    """Per class n_train / n_val / n_test images; returns the dataset folder. An existing dataset with
    the same sizes is kept as it is."""
    ddir = Path(root) / "fashion_mnist"
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
                path = ddir / "images" / rel
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(x[i], mode="L").save(path)
                entries.append([rel, c, name])
        split[which] = entries
    atomic_write_text(split_path, json.dumps(split) + "\n")
    return ddir

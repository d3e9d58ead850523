"""The PTNL demo's few-shot dataset: Fashion-MNIST in CoOp's layout (``shared.clip.demo_data``: train/val
images from Fashion-MNIST train[50000:], test images from its test split, ``split_zhou_FashionMNIST.json``)
with every image shown in one look of the demo CLIP's "looks" variant (``shared.clip.demo_clip.LOOKS``,
e.g. ``dark``), written to a second images folder, ``images_<look>``, read through the same split file.

The look is the demo's downstream domain: the demo CLIP saw it in pre-training, captioned with its
name ("a dark photo of a coat."), while CoOp's hand-crafted template ("a photo of a {}.") names the
plain look, so a learned context has something to adapt to, as on CoOp's real datasets.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from shared.clip.demo_clip import LOOKS, apply_look
from shared.clip.demo_data import DATASET_DIR, IMAGE_DIR, SPLIT_FILE, write_fashion_mnist_coop


def look_image_dir(look: str | None) -> str:
    """The images folder (under the dataset folder) of ``look``; None or "plain": the plain images'."""
    return IMAGE_DIR if look in (None, "plain") else f"{IMAGE_DIR}_{look}"


def write_demo_dataset(root: str | Path, n_train: int, n_val: int, n_test: int, look: str | None = None,
                       data_root: str | None = None) -> Path:
    """Fashion-MNIST in CoOp's layout under ``<root>/fashion_mnist`` (n_train / n_val / n_test per class)
    and, for a ``look`` other than plain, every image of its split in that look under
    ``images_<look>``. Images already written are kept. Returns the dataset folder."""
    if look is not None and look not in LOOKS:
        raise ValueError(f"unknown look {look!r}; known: {sorted(LOOKS)}")
    ddir = write_fashion_mnist_coop(root, n_train, n_val, n_test, data_root)
    if look in (None, "plain"):
        return ddir
    split = json.loads((ddir / SPLIT_FILE).read_text())
    src, dst = ddir / IMAGE_DIR, ddir / look_image_dir(look)
    for entries in split.values():
        todo = [rel for rel, _, _ in entries if not (dst / rel).is_file()]
        for i in range(0, len(todo), 500):
            chunk = todo[i:i + 500]
            x = np.stack([np.asarray(Image.open(src / rel).convert("L")) for rel in chunk])
            for rel, img in zip(chunk, apply_look(x, look)):
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img, mode="L").save(dst / rel)
    return ddir


__all__ = ["DATASET_DIR", "look_image_dir", "write_demo_dataset"]

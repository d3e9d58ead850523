"""A small generated dataset in CoOp's on-disk layout, for tests and smoke runs of CLIP projects:
``<root>/synth/images/<class>/<split>_<i>.png`` (a coloured square of the class on dark noise) and
``<root>/synth/split_zhou_Synth.json`` in the official format. Load it with
``load_dataset("Synth", root, dataset_dir="synth", image_dir="images", split_file="split_zhou_Synth.json")``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["red_square", "green_circle", "blue_cross", "yellow_bar", "white_ring"]
COLORS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 220, 40), (240, 240, 240)]


def write_synthetic_coop(root: str | Path, n_train: int = 12, n_val: int = 2, n_test: int = 4, size: int = 32,
                         seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    ddir = Path(root) / "synth"
    split = {"train": [], "val": [], "test": []}
    for c, (name, col) in enumerate(zip(CLASSES, COLORS)):
        (ddir / "images" / name).mkdir(parents=True, exist_ok=True)
        for which, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                y, x = rng.integers(4, size - 14, 2)
                img[y:y + 10, x:x + 10] = col
                rel = f"{name}/{which}_{i:03d}.png"
                Image.fromarray(img).save(ddir / "images" / rel)
                split[which].append([rel, c, name])
    (ddir / "split_zhou_Synth.json").write_text(json.dumps(split))
    return ddir

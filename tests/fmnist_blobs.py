"""A small set in Fashion-MNIST's idx format for tests: 10 classes of 28x28 bright blocks at
class-specific places on noise (the projects' loaders read it as they read the real files)."""
import gzip
from pathlib import Path

import numpy as np


def write_idx(path, arr: np.ndarray) -> None:
    header = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def write_blob_fmnist(root: Path, n_train: int = 320, n_test: int = 80, rows: tuple[int, int] = (4, 12),
                      cols: tuple[int, int] = (1, 6)) -> Path:
    """Class c = (r, col) = divmod(c, 5) gets +200 on rows[0] + 12 r : rows[1] + 12 r and
    cols[0] + 5 col : cols[1] + 5 col."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, c in enumerate(labels):
            r, col = divmod(int(c), 5)
            images[i, rows[0] + 12 * r: rows[1] + 12 * r, cols[0] + 5 * col: cols[1] + 5 * col] += 200
        write_idx(root / f"{split}-images-idx3-ubyte.gz", np.clip(images, 0, 255))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root

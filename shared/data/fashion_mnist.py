"""Fashion-MNIST (Xiao et al., 2017; MIT licence): real images that every demo can get offline.

Looked for, in order: ``$DATA_ROOT`` / an explicit folder holding the four idx files (raw or .gz,
also under ``FashionMNIST/raw/`` as torchvision stores them), the Debian package
``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), then torchvision's downloader when
``download=True`` and the machine is online.
"""
from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np

from shared.data.debian_packages import PACKAGES

log = logging.getLogger(__name__)

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEBIAN_DIR = Path(PACKAGES["fashion_mnist"][1])
_LOGGED: set[Path] = set()
HOW_TO_GET = ("Fashion-MNIST not found. Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
              "point data.root (or $DATA_ROOT) at a folder holding the four idx(.gz) files, or run once online "
              "(torchvision downloads it).")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise ValueError(f"{path}: not an idx ubyte file (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated ({arr.size} values for shape {dims})")
    return arr.reshape(dims)


def _find_in(folder: Path, name: str) -> Path | None:
    for sub in ("", "FashionMNIST/raw", "fashion-mnist", "fashion_mnist"):
        for ext in ("", ".gz"):
            p = folder / sub / (name + ext)
            if p.is_file():
                return p
    return None


def find_root(root: str | os.PathLike | None = None) -> Path | None:
    """The folder to read: ``root`` when given, else ``$DATA_ROOT`` when set, else the Debian copy; None
    when that one folder lacks the four files. An explicit folder is never replaced by another."""
    if root:
        candidate = Path(root)
    elif os.environ.get("DATA_ROOT"):
        candidate = Path(os.environ["DATA_ROOT"])
    else:
        candidate = DEBIAN_DIR
    return candidate if all(_find_in(candidate, n) for pair in FILES.values() for n in pair) else None


def _missing_files(folder: Path) -> list[str]:
    return [n for pair in FILES.values() for n in pair if not _find_in(folder, n)]


def load(split: str = "train", root: str | os.PathLike | None = None, download: bool = False,
         download_dir: str | os.PathLike = "data/fashion_mnist") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of the 'train' (60k) or 'test' (10k) split, from
    ``find_root(root)``; the folder read is logged."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_root(root)
    if folder is None and download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(download_dir), train=True, download=True)
        FashionMNIST(str(download_dir), train=False, download=True)
        folder = find_root(download_dir)
    if folder is None:
        given = Path(root) if root else Path(os.environ["DATA_ROOT"]) if os.environ.get("DATA_ROOT") else None
        if given is not None:
            why = "does not exist" if not given.exists() else "lacks " + ", ".join(_missing_files(given))
            raise FileNotFoundError(f"Fashion-MNIST: the folder given ({'data.root' if root else '$DATA_ROOT'}) "
                                    f"{given} {why} (raw or .gz idx files, also under FashionMNIST/raw/). "
                                    f"Give the folder that holds them, or no folder to use the Debian copy "
                                    f"({DEBIAN_DIR}).")
        raise FileNotFoundError(HOW_TO_GET + " Looked in: " + str(DEBIAN_DIR))
    if folder not in _LOGGED:
        _LOGGED.add(folder)
        log.info("Fashion-MNIST: reading %s", folder)
    images, labels = (_read_idx(_find_in(folder, n)) for n in FILES[split])
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels in the {split} split")
    return images, labels.astype(np.int64)

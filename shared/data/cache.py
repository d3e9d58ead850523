"""A disk cache of decoded arrays (one .npy per key), for loaders whose decoding cannot keep up
with the GPU. Safe with many DataLoader workers: each entry is written to a temp file and
renamed into place."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np


class NpyCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.path(key)
        try:
            return np.load(path)
        except (FileNotFoundError, ValueError, OSError, EOFError):
            pass
        arr = np.ascontiguousarray(compute())
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, path)
        return arr

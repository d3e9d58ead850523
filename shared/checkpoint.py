"""Atomic checkpoints, a ``last.txt`` pointer, keep-N retention and exact auto-resume.

Write order (as big_vision/fvcore): data to a temp file in the same folder, fsync, ``os.replace``
onto the final name, then the pointer the same way, then prune. A crash at any point leaves the
previous checkpoint and pointer intact.
"""
from __future__ import annotations

import io
import logging
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_STEP_FILE = re.compile(r"^step_(\d{9})\.pt$")


def _atomic_write(path: str | os.PathLike, write_fn) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write(path, lambda f: f.write(buf.getbuffer()))


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """``<run>/checkpoints/step_000000123.pt`` files, ``last.txt`` naming the newest, ``best.pt``."""

    def __init__(self, run_dir: str | os.PathLike, keep: int = 2):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    @property
    def pointer(self) -> Path:
        return self.dir / "last.txt"

    def save(self, state: dict, step: int) -> Path:
        path = self.dir / f"step_{step:09d}.pt"
        atomic_torch_save(state, path)
        atomic_write_text(self.pointer, path.name + "\n")
        self._prune()
        return path

    def save_best(self, state: dict) -> Path:
        path = self.dir / "best.pt"
        atomic_torch_save(state, path)
        return path

    def _step_files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if _STEP_FILE.match(p.name))

    def _prune(self) -> None:
        files = self._step_files()
        current = self.pointer.read_text().strip() if self.pointer.exists() else None
        for p in files[: max(0, len(files) - self.keep)]:
            if p.name != current:
                p.unlink(missing_ok=True)

    def latest_path(self) -> Path | None:
        """The file ``last.txt`` names; if it is missing, the newest step file."""
        if self.pointer.exists():
            name = self.pointer.read_text().strip()
            if (self.dir / name).is_file():
                return self.dir / name
            log.warning("checkpoint pointer names %s, which is missing; using the newest step file", name)
        files = self._step_files()
        return files[-1] if files else None

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict | None:
        """The newest loadable checkpoint, skipping unreadable ones (a crash mid-copy by hand)."""
        candidates = []
        latest = self.latest_path()
        if latest is not None:
            candidates.append(latest)
        candidates += [p for p in reversed(self._step_files()) if p not in candidates]
        for path in candidates:
            try:
                return torch.load(path, map_location=map_location, weights_only=False)
            except Exception as e:  # corrupt or truncated file: report and try the previous one
                log.warning("could not load checkpoint %s (%s); trying an older one", path, e)
        return None


def load_weights(path: str | os.PathLike, key: str | None = None) -> dict:
    """A state dict from a local file (a raw state dict, or a checkpoint holding one under ``key``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    for k in ([key] if key else []) + ["model", "state_dict"]:
        if isinstance(obj, dict) and k in obj and isinstance(obj[k], dict):
            obj = obj[k]
            break
    return {k.removeprefix("module."): v for k, v in obj.items()}

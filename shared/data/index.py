"""Checks that a dataset's id lists and files agree, with errors a user can act on."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable


class DatasetError(FileNotFoundError):
    pass


def require_dir(path: str | os.PathLike, what: str, how: str = "") -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path}" + (f"\n{how}" if how else ""))
    return path


def eval_set_folder(cfg, name: str, how: str = ""):
    """``(spec, data root, set folder)`` of ``cfg.eval.sets.<name>`` (``dir`` under ``data.root``); an
    undefined set or a missing folder is a DatasetError naming it (``how``: how to get the data)."""
    if name not in cfg.eval.sets:
        raise KeyError(f"evaluation set '{name}' is not defined in eval.sets ({', '.join(cfg.eval.sets)})")
    spec = cfg.eval.sets[name]
    root = require_dir(cfg.data.root, "data root (data.root)", how)
    return spec, root, require_dir(root / spec.dir, f"evaluation set '{name}' folder", how)


def read_id_list(path: str | os.PathLike, column: int = 0, what: str = "id list") -> list[str]:
    """Ids from a .txt (one per line) or .csv (``column`` of each row); blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        ids.append(line.split(",")[column].strip() if path.suffix == ".csv" else line)
    if not ids:
        raise DatasetError(f"{what} is empty: {path}")
    return ids


def check_ids(ids: Iterable[str], paths: Callable[[str], list[Path]], skip_missing: bool = False,
              what: str = "dataset") -> tuple[list[str], list[str]]:
    """Split ``ids`` into those whose every file exists and those missing one.

    Raises with the count and the first names unless ``skip_missing``; returns (present, missing).
    """
    present, missing = [], []
    for i in ids:
        (present if all(p.is_file() for p in paths(i)) else missing).append(i)
    if missing and not skip_missing:
        first = ", ".join(str(p) for i in missing[:5] for p in paths(i) if not p.is_file())
        raise DatasetError(
            f"{what}: {len(missing)} of {len(present) + len(missing)} listed ids have missing files "
            f"(first: {first}). Fix the data, or set data.skip_missing=true to train on the rest.")
    return present, missing

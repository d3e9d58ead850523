"""Rank-0 logging: TensorBoard under ``<run>/tb``, one JSON object per line in ``metrics.jsonl``,
and tqdm progress bars with rate and ETA."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from shared import dist


def setup_python_logging(run_dir: str | os.PathLike | None = None) -> None:
    level = logging.INFO if dist.is_main() else logging.WARNING
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if run_dir is not None and dist.is_main():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(run_dir) / "log.txt"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


class MetricLogger:
    """Writes scalars to TensorBoard and ``metrics.jsonl`` on rank 0; a no-op elsewhere.

    ``purge_step`` (the resumed step) drops events a killed run wrote after its last checkpoint,
    in both TensorBoard and the JSON lines file, so a resumed run's logs read as one run.
    """

    def __init__(self, run_dir: str | os.PathLike, purge_step: int | None = None, tensorboard: bool = True):
        self.enabled = dist.is_main()
        self.run_dir = Path(run_dir)
        self.writer = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / "metrics.jsonl"
        if purge_step is not None and self.jsonl.exists():
            kept = [line for line in self.jsonl.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= purge_step]
            self.jsonl.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if hasattr(v, "__float__") else v) for k, v in metrics.items()}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        if self.writer is not None:
            for k, v in clean.items():
                if isinstance(v, float) and math.isfinite(v):
                    self.writer.add_scalar(k, v, step)

    def text(self, tag: str, text: str) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_text(tag, text)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", initial: int = 0, **kw):
    """A tqdm bar (rate and ETA) on rank 0, silent elsewhere; in CI/non-TTY output it updates sparsely."""
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=not dist.is_main(),
                mininterval=0.5 if interactive else 30.0, dynamic_ncols=True, leave=False, **kw)

"""Rank-0 logging: TensorBoard under ``<run>/tb``, one JSON object per line in ``metrics.jsonl``,
tqdm progress bars on a terminal, and ``Progress`` (rate and ETA of a run's work) with the plain line a
log file gets instead of a bar."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

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


log = logging.getLogger(__name__)


def _parse_lines(path: Path) -> tuple[list[dict], list[str], list[int]]:
    """The records of a JSON-lines file, their raw lines, and the (1-based) numbers of lines that do not
    parse (a kill mid-write tears the last line; a torn line followed by more came from an older run)."""
    records, raw, bad = [], [], []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad.append(i)
            continue
        if not isinstance(rec, dict):
            bad.append(i)
            continue
        records.append(rec)
        raw.append(line)
    return records, raw, bad


def purge_jsonl(path: str | os.PathLike, purge_step: int | None) -> None:
    """A JSON-lines log of a run (metrics.jsonl, or a project's per-step side log), read as one run after
    a resume: lines of steps after ``purge_step`` go (those at it were written before its checkpoint), 0
    (a run starting from scratch) drops every line, ``None`` keeps them; torn lines (a kill mid-write) are
    dropped with a warning. Records carry their step under ``"step"``. Call it on rank 0."""
    path = Path(path)
    if not path.exists():
        return
    from shared.checkpoint import atomic_write_text

    records, raw, bad = _parse_lines(path)
    if bad:
        log.warning("%s: dropped %d line(s) that do not parse (line %s), written by a process killed "
                    "mid-write", path, len(bad), ", ".join(map(str, bad[:5])))
    if purge_step is not None:
        keep = [r.get("step", 0) <= purge_step if purge_step > 0 else False for r in records]
        if not all(keep):
            log.info("%s: dropped %d line(s) logged after step %d by a run that did not checkpoint them",
                     path, keep.count(False), purge_step)
        raw = [line for line, k in zip(raw, keep) if k]
    if bad or purge_step is not None:
        atomic_write_text(path, "".join(line + "\n" for line in raw))


class MetricLogger:
    """Writes scalars to TensorBoard and ``metrics.jsonl`` on rank 0; a no-op elsewhere.

    ``purge_step`` (the step a run continues from) drops what a killed run logged after its last
    checkpoint, in both TensorBoard and the JSON lines file, so a resumed run's logs read as one run:
    lines of steps after ``purge_step`` go (those at it were written before its checkpoint), and 0 (a
    run starting from scratch) drops every line. ``None`` appends to what is there. Lines a kill tore
    are dropped with a warning on opening.
    """

    def __init__(self, run_dir: str | os.PathLike, purge_step: int | None = None, tensorboard: bool = True):
        self.enabled = dist.is_main()
        self.run_dir = Path(run_dir)
        self.writer = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / "metrics.jsonl"
        purge_jsonl(self.jsonl, purge_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard hides events at steps >= its purge_step: keep those logged at the resumed step
            tb_purge = None if purge_step is None else (purge_step + 1 if purge_step > 0 else 0)
            _after_existing_event_files(self.run_dir / "tb")
            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=tb_purge)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if hasattr(v, "__float__") else v) for k, v in metrics.items()}
        line = (json.dumps({"step": step, "time": time.time(), **clean}) + "\n").encode()
        fd = os.open(self.jsonl, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)  # one write: a kill leaves at most this line torn
        finally:
            os.close(fd)
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
    """The records of ``<run>/metrics.jsonl``. A line that does not parse (torn by a kill, or the last line
    while the run writes it) is skipped, with a warning naming it."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records, _, bad = _parse_lines(path)
    if bad:
        log.warning("%s: skipped line(s) %s, which are not JSON (torn by a kill, or being written)", path,
                    ", ".join(map(str, bad[:5])))
    return records


def stderr_is_tty() -> bool:
    """Is stderr a terminal (a bar redraws in place) rather than a file, as in a cluster job?"""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", initial: int = 0, **kw):
    """A tqdm bar (rate and ETA) on rank 0, silent elsewhere; in CI/non-TTY output it updates sparsely."""
    interactive = stderr_is_tty()
    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=not dist.is_main(),
                mininterval=0.5 if interactive else 30.0, dynamic_ncols=True, leave=False, **kw)


class Progress:
    """Work done out of ``total`` (steps, images, or a run's phases weighted by their cost), its rate and
    the ETA, timed by ``clock`` (seconds; the loop passes its training clock, which stops while evaluating).

    Only work done since ``start`` sets the rate: work found done (the steps a resumed run had made, a phase
    finished by an earlier job) is ``skip``ped, else the ETA would count it as done in no time."""

    def __init__(self, total: float, clock: Callable[[], float] = time.perf_counter):
        if not total > 0:
            raise ValueError(f"Progress needs a positive total, got {total}")
        self.total, self.clock = float(total), clock
        self.done = self._skipped = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = self.clock()

    def advance(self, units: float = 1.0) -> None:
        self.done = min(self.total, self.done + units)

    def skip(self, units: float) -> None:
        units = max(0.0, min(units, self.total - self.done))
        self.done += units
        self._skipped += units

    def finish(self) -> None:
        self.advance(self.total - self.done)

    @property
    def fraction(self) -> float:
        return self.done / self.total

    def elapsed(self) -> float:
        """Clock seconds since ``start``."""
        return 0.0 if self._t0 is None else self.clock() - self._t0

    def rate(self) -> float | None:
        """Units per second of clock time since ``start`` (None before any timed work)."""
        measured, elapsed = self.done - self._skipped, self.elapsed()
        return measured / elapsed if measured > 0 and elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds of clock time left at the rate so far: 0 when done, None while unknown."""
        if self.done >= self.total * (1 - 1e-9):  # parts' shares add up to the total but for rounding
            return 0.0
        rate = self.rate()
        return (self.total - self.done) / rate if rate else None

    def part(self, cost: float, units: float) -> "ProgressPart":
        """A phase of this run worth ``cost`` of its total, counted in the phase's own ``units``."""
        return ProgressPart(self, cost, units)


class ProgressPart:
    """One phase's share of a run's ``Progress``: it counts the phase's own units (steps, images) and
    reports the whole run's fraction and ETA, so the ETA runs on across phases instead of restarting."""

    def __init__(self, run: Progress, cost: float, units: float):
        self.run, self.cost, self.units = run, float(cost), float(units)
        self.done = self._given = 0.0

    def start(self) -> None:
        self.run.start()

    def advance(self, units: float = 1.0) -> None:
        self.run.advance(self._take(units))

    def skip(self, units: float) -> None:
        self.run.skip(self._take(units))

    def finish(self) -> None:
        """Hand on the whole share (a phase may end below its estimate: skipped batches, fewer images)."""
        self.done = self.units
        rest, self._given = self.cost - self._given, self.cost
        self.run.advance(rest)

    def _take(self, units: float) -> float:
        units = max(0.0, min(units, self.units - self.done))
        self.done += units
        if self.done >= self.units:
            share = self.cost - self._given  # exactly the rest: no rounding left over
        else:
            share = min(self.cost * units / self.units, self.cost - self._given)
        self._given += share
        return share

    @property
    def fraction(self) -> float:
        return self.run.fraction

    def eta(self) -> float | None:
        return self.run.eta()


def duration(seconds: float | None) -> str:
    """``42s``, ``18m35s``, ``3h07m``, ``2d04h``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s < 86400 else f"{s // 86400}d{s % 86400 // 3600:02d}h"


def progress_line(count: str, done: int, total: int, rate: float | None, unit: str, eta: float | None,
                  clock: str, seconds: float, run_fraction: float | None = None) -> str:
    """The plain line a log file gets instead of a bar, e.g.
    ``step 1200/5000 (24.0 %) | 3.41 steps/s | eta 18m35s | train 5m52s``; ``run_fraction`` (the whole
    run's, when the ETA is the run's rather than this count's) adds ``run 35.2 %``."""
    fields = [f"{count} {done}/{total} ({100 * done / max(total, 1):.1f} %)",
              f"{'?' if rate is None else f'{rate:.3g}' if rate < 1000 else f'{rate:.0f}'} {unit}/s"]
    if run_fraction is not None:
        fields.append(f"run {100 * run_fraction:.1f} %")
    fields += [f"eta {duration(eta)}", f"{clock} {duration(seconds)}"]
    return " | ".join(fields)


def _after_existing_event_files(tb_dir: Path) -> None:
    """Wait (at most a second) until the clock is past the newest event file's second. TensorBoard reads a
    folder's event files in name order, and a name starts with its creation second, then host, pid and a
    per-process counter: a writer opened again in the same second (a resume inside one process, as in tests)
    could sort before the file it purges ("...9" after "...10"), and its purge would be read first."""
    stamps = []
    for f in tb_dir.glob("events.out.tfevents.*"):
        part = f.name.split(".")[3]
        if part.isdigit():
            stamps.append(int(part))
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if 0 < wait <= 1:
            time.sleep(wait)

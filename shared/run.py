"""What every training entry does first: distributed init, seeding, the run folder, resume.

    ctx = start_run(cfg)             # runs/<project>/<name>/, locked; config.yaml, env.json, logging
    state = ctx.resume()             # the last checkpoint's dict, or None
    ...
    ctx.save(step, {...})            # atomic; rank 0 only; records the project
    ctx.close()                      # closes the logger and releases the lock

Run-folder safety: one writer at a time (``run.lock``; a lock left by a dead process is detected from its
pid, host and start time and taken over); a folder started with another config is refused, naming the keys
that differ, unless ``run.allow_config_change`` (the old config is kept under ``config_history/``); when
checkpoint files exist but none loads the run stops naming them, unless ``run.restart_on_corrupt`` (the
old files move to ``restarts/<time>/``, as they do for ``run.resume=never``); temp files of a save that
was interrupted are removed at start. The files and folders named by the config keys in ``run.input_keys``
(local weights, a generated data set) are fingerprinted into ``inputs.json``; a folder whose checkpoints or
results were made from other contents is refused the same way as a changed config.
"""
from __future__ import annotations

import atexit
import errno
import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from shared import dist
from shared.checkpoint import (CheckpointManager, UnreadableCheckpoints, atomic_write_text, check_project,
                               remove_stale_temps, rng_state)
from shared.config import MISSING, Config, config_changes, load_yaml, save_config
from shared.logging import MetricLogger, setup_python_logging

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    pass


class RunFolderLocked(RuntimeError):
    pass


class ConfigChanged(RuntimeError):
    pass


def _git_sha() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL,
                                       cwd=Path(__file__).parent).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


# -- the lock ------------------------------------------------------------------------------------------
def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: dict[Path, "RunLock"] = {}


class RunLock:
    """``<run>/run.lock``: an exclusive ``flock`` held for the run's lifetime (the kernel, or the NFS server,
    drops it when the process dies), and a record of the holder (pid, host, start time, command) for the
    message a second writer gets. The file stays; it is empty when no run holds it. A record left by a
    process that died without releasing is checked before it is taken over: a dead pid (or a reused one,
    told by its start time) on this host, or the same SLURM job requeued."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "run.lock"
        self.fd: int | None = None

    @staticmethod
    def me() -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": _start_ticks(os.getpid()),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "command": " ".join(sys.argv)[:300]}

    def _read(self) -> dict | None:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return {"unreadable": text[:200]}

    @staticmethod
    def _who(h: dict | None) -> str:
        if not h:
            return "another process (its record is not written yet)"
        if "unreadable" in h:
            return f"a process whose record does not parse ({h['unreadable']!r})"
        return (f"pid {h.get('pid')} on host {h.get('host')}, started {h.get('started')}"
                + (f" (SLURM job {h['slurm_job_id']})" if h.get("slurm_job_id") else "")
                + (f": {h['command']}" if h.get("command") else ""))

    def _refuse(self, holder: dict | None, extra: str = "") -> RunFolderLocked:
        return RunFolderLocked(
            f"run folder {self.path.parent} is in use by {self._who(holder)}{extra}. Two processes writing one run "
            "folder would log every step twice and overwrite each other's checkpoints: wait for it to end, stop "
            "it, or give this run another run.name.")

    def _stale_reason(self, holder: dict, me: dict) -> str | None:
        """Why a record left in the file (no flock held) may be taken over; None: refuse."""
        if "unreadable" in holder:
            return "its record does not parse"
        if holder.get("host") == me["host"]:
            pid = int(holder.get("pid", -1))
            if pid == me["pid"]:
                return "it is this process's own, left by a run that did not close"
            if not _alive(pid):
                return "that process has ended"
            ticks = _start_ticks(pid)
            if ticks is not None and holder.get("start_ticks") is not None and ticks != holder["start_ticks"]:
                return "that pid now belongs to another process"
            return None
        if me["slurm_job_id"] and holder.get("slurm_job_id") == me["slurm_job_id"]:
            return "it is this SLURM job's earlier run (requeued)"
        return None

    def acquire(self) -> None:
        held = _HELD.pop(self.path.resolve(), None)
        if held is not None:  # a run of this process on this folder that was never closed (an exception)
            log.info("taking over the lock of an earlier run of this process on %s", self.path.parent)
            held.release()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        me = self.me()
        try:
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                enforced = True
            except BlockingIOError:
                holder = self._read()
                gone = bool(holder and holder.get("host") == me["host"] and "pid" in holder
                            and not _alive(int(holder["pid"])))
                raise self._refuse(holder, f"; that process has ended, but one it started still holds the lock (a "
                                           f"data-loader worker?): `fuser {self.path}` names it" if gone else "") from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                enforced = False  # a file system without locks: the record alone decides
                log.warning("%s: the file system does not support locks (%s); relying on the holder record",
                            self.path, e)
            holder = self._read()
            if holder is not None:
                why = self._stale_reason(holder, me)
                if why is None:
                    raise self._refuse(holder, "" if enforced else
                                       f" (if that process has ended, delete {self.path} and run again)")
                log.warning("taking over the lock of %s in %s: %s", self._who(holder), self.path.parent, why)
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        _HELD[self.path.resolve()] = self
        atexit.register(self.release)

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        _HELD.pop(self.path.resolve(), None)
        try:
            os.ftruncate(fd, 0)  # empty: released (a killed holder leaves its record for the stale check)
        finally:
            os.close(fd)  # closing drops the flock


# -- the run context -----------------------------------------------------------------------------------
@dataclass
class RunContext:
    cfg: Config
    run_dir: Path
    device: torch.device
    ckpt: CheckpointManager
    logger: MetricLogger | None = None
    lock: RunLock | None = None
    inputs: dict | None = None  # rank 0: the fingerprints of run.input_keys (inputs.json)

    def resume(self) -> dict | None:
        """The state to continue from: ``run.resume`` = auto (the run's last checkpoint), never, or a path.
        Checkpoints that exist but do not load stop the run (``run.restart_on_corrupt`` starts over); a
        checkpoint of another project is refused."""
        mode = self.cfg.run.get("resume", "auto")
        project = self.cfg.run.get("project")
        if mode == "never":
            self._start_over("run.resume=never")
            return None
        if mode not in ("auto", None):
            path = Path(mode).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"run.resume={mode}: no such checkpoint")
            state = torch.load(path, map_location="cpu", weights_only=False)
            check_project(state, project, path)
            return state
        try:
            state = self.ckpt.load_latest()
        except UnreadableCheckpoints as e:
            if not self.cfg.run.get("restart_on_corrupt", False):
                raise
            log.warning("%s\nrun.restart_on_corrupt=true: starting over", e)
            self._start_over("run.restart_on_corrupt=true")
            return None
        if state is not None:
            check_project(state, project, self.ckpt.loaded_path)
            log.info("resuming %s from step %s (%s)", self.run_dir, state.get("step"), self.ckpt.loaded_path.name)
        return state

    def _start_over(self, why: str) -> None:
        """Move a previous run's checkpoints, logs and results to ``restarts/<time>/`` before starting over."""
        if dist.is_main():
            ckpts = self.ckpt._step_files() + [p for p in (self.ckpt.pointer, self.ckpt.dir / "best.pt") if p.exists()]
            others = [self.run_dir / n for n in ("metrics.jsonl", "tb", "results.json") if (self.run_dir / n).exists()]
            if ckpts or (self.run_dir / "results.json").exists():
                dest = self.run_dir / "restarts" / _timestamp()
                (dest / "checkpoints").mkdir(parents=True, exist_ok=True)
                for p in ckpts:
                    os.replace(p, dest / "checkpoints" / p.name)
                for p in others:
                    os.replace(p, dest / p.name)
                log.warning("%s: the previous run's checkpoints, metrics and results moved to %s", why, dest)
        dist.barrier()

    def open_logger(self, step: int | None) -> MetricLogger:
        """The run's logger, continuing from ``step`` (the resumed step): what a killed run logged after its
        last checkpoint is dropped; ``0`` or ``None`` (no checkpoint) drops everything earlier attempts logged."""
        purge = step or 0
        self.logger = MetricLogger(self.run_dir, purge_step=purge)
        if purge == 0:
            self.logger.text("config", "```\n" + self.cfg.dump() + "\n```")
        return self.logger

    def save(self, step: int, state: dict) -> None:
        if dist.is_main():
            self.ckpt.save({"step": step, "project": self.cfg.run.get("project"), "rng": rng_state(),
                            "config": self.cfg.to_dict(), **state}, step)
        dist.barrier()

    def nonfinite_guard(self) -> "NonFiniteGuard":
        return NonFiniteGuard(self.device, self.ckpt.dir)

    def finished_results(self) -> dict | None:
        """The results of a run that already finished in this folder (``run.resume`` auto and its
        results.json written), logged as complete, with the context closed; None otherwise. A run
        whose training is done calls it before evaluating again, so a re-run appends nothing."""
        path = self.run_dir / "results.json"
        if self.cfg.run.get("resume", "auto") != "auto" or not path.is_file():
            return None
        log.info("%s is complete; delete results.json to run it again", self.run_dir)
        self.close()
        return json.loads(path.read_text())

    def write_results(self, results: dict, name: str = "results.json") -> Path:
        path = self.run_dir / name
        if dist.is_main():
            atomic_write_text(path, json.dumps(results, indent=2) + "\n")
        return path

    def finish(self, results: dict, paper=None) -> dict:
        """The end of a training entry: ``results["paper"]`` (the config's paper numbers, or None) set,
        results.json written and logged on rank 0, the context closed, all ranks waiting for it."""
        results["paper"] = dict(paper) if paper else None
        if dist.is_main():
            self.write_results(results)
            log.info("results: %s", results)
        self.close()
        dist.barrier()
        return results

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


class NonFiniteGuard:
    """Remembers, on the device and without a host sync, the first step whose loss was NaN/inf;
    ``check()`` (at log steps and before every checkpoint) stops all ranks with that step number, so a
    checkpoint is never written after a non-finite loss."""

    def __init__(self, device: torch.device, ckpt_dir: Path):
        self.first = torch.zeros((), dtype=torch.long, device=device)
        self.ckpt_dir = ckpt_dir

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = (self.first == 0) & ~torch.isfinite(loss.detach())
        self.first = torch.where(bad, torch.full_like(self.first, step), self.first)

    def check(self) -> None:
        first = self.first
        if dist.is_dist():
            first = first.clone()
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MAX)
        if int(first):
            raise NonFiniteLossError(f"the loss is not finite at step {int(first)}; stopping. "
                                     f"The last good checkpoint is kept in {self.ckpt_dir}")


def run_dir_of(cfg: Config) -> Path:
    if not cfg.run.get("project"):
        raise ValueError("run.project is not set: a project's configs/base.yaml names its project under run:")
    return Path(cfg.run.root) / cfg.run.project / cfg.run.name


def _changeable(key: str, patterns) -> bool:
    return any(key == p or (p.endswith(".*") and key.startswith(p[:-1])) for p in patterns or ())


def _check_config(cfg: Config, run_dir: Path) -> None:
    """Refuse a run folder whose checkpoints or results were made with another config (keys whose values
    changed), unless ``run.allow_config_change`` or ``run.resume=never`` (the old run is moved aside); keys
    in ``run.changeable_keys`` and keys added or removed in the code since may differ. A folder holding
    nothing the old config produced (a run that stopped before its first checkpoint) takes the new one.
    Any difference keeps the old config under ``config_history/``."""
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    old = load_yaml(saved.read_text()) or {}
    changes = config_changes(old, cfg.to_dict())
    if not changes:
        return
    patterns = cfg.run.get("changeable_keys") or []
    blocking = [c for c in changes if MISSING not in (c[1], c[2]) and not _changeable(c[0], patterns)]
    lines = "\n  ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in (blocking or changes))
    if blocking and _produced(run_dir) and not cfg.run.get("allow_config_change", False) and cfg.run.get("resume") != "never":
        raise ConfigChanged(
            f"{run_dir} was started with another config; these keys differ (was -> now):\n  {lines}\n"
            "Its checkpoints and results belong to the old values. Give this run another run.name, or continue "
            "it with the new values on purpose with run.allow_config_change=true (the old config.yaml is kept "
            "under config_history/).")
    hist = run_dir / "config_history"
    hist.mkdir(exist_ok=True)
    kept = hist / f"config.{_timestamp()}.yaml"
    os.replace(saved, kept)
    log.warning("the config differs from the one %s was started with (kept as %s):\n  %s", run_dir, kept,
                "\n  ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes))


_FILES = "_folder_files"  # inputs.json: the file list of each folder input, to say what changed
SMALL_FILE = 1 << 20  # folder fingerprints read files up to this size; larger ones count by size


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_manifest(path: Path) -> dict[str, str]:
    """``{relative path: "<size>:<sha256 or ->"}`` of the files below ``path`` (contents read up to
    ``SMALL_FILE`` bytes; larger files count by size)."""
    out = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        size = f.stat().st_size
        out[f.relative_to(path).as_posix()] = f"{size}:{_file_digest(f) if size <= SMALL_FILE else '-'}"
    return out


def _manifest_digest(manifest: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel, entry in manifest.items():
        size, digest = entry.split(":", 1)
        h.update(f"{rel}\t{size}\t".encode())
        if digest != "-":
            h.update(digest.encode())
        h.update(b"\n")
    return "folder-sha256:" + h.hexdigest()


def fingerprint_path(value) -> str | None:
    """What a config value names, as one string: a file's sha256; a folder's sha256 over its files' relative
    paths, sizes and (up to ``SMALL_FILE`` bytes) contents, so the same data moved elsewhere keeps it; anything
    else (a hub tag, ``torchvision``, a path that does not exist) the value itself; None for null."""
    if value is None or value == "":
        return None
    path = Path(str(value)).expanduser()
    if path.is_file():
        return "sha256:" + _file_digest(path)
    if path.is_dir():
        return _manifest_digest(folder_manifest(path))
    return f"value:{value}"


def _folder_changes(before: dict[str, str] | None, now: dict[str, str], most: int = 8) -> str:
    """The files added, removed and changed between two folder manifests, ``most`` named of each."""
    if before is None:
        return ""
    parts = []
    for what, names in (("added", sorted(set(now) - set(before))), ("removed", sorted(set(before) - set(now))),
                        ("changed", sorted(k for k in now if k in before and now[k] != before[k]))):
        if names:
            more = f" (+{len(names) - most} more)" if len(names) > most else ""
            parts.append(f"{len(names)} {what}: {', '.join(names[:most])}{more}")
    return "; ".join(parts)


def _config_value(cfg: Config, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"run.input_keys names {key!r}, which is not a key of this config")
        node = node[part]
    return node


def input_fingerprints(cfg: Config) -> dict[str, str | None]:
    """``{key: fingerprint_path(value)}`` for every key in ``run.input_keys``."""
    return {k: fingerprint_path(_config_value(cfg, k)) for k in cfg.run.get("input_keys") or []}


def _produced(run_dir: Path) -> bool:
    ckpts = run_dir / "checkpoints"
    return (run_dir / "results.json").exists() or (ckpts.is_dir() and any(
        p.suffix == ".pt" or p.name == "last.txt" for p in ckpts.iterdir()))


def _check_inputs(cfg: Config, run_dir: Path) -> dict:
    """Refuse a run folder whose checkpoints or results were made from other inputs (``run.input_keys``) or
    before they were recorded, unless ``run.allow_config_change`` or ``run.resume=never``; then record and
    return them."""
    now = input_fingerprints(cfg)
    folders = {k: folder_manifest(Path(str(_config_value(cfg, k))).expanduser()) for k, v in now.items()
               if v and v.startswith("folder-sha256:")}
    record = run_dir / "inputs.json"
    before = json.loads(record.read_text()) if record.is_file() else None
    before_files = (before or {}).pop(_FILES, {}) if isinstance(before, dict) else {}
    overridden = cfg.run.get("allow_config_change", False) or cfg.run.get("resume") == "never"
    if now and _produced(run_dir) and not overridden:
        if before is None:
            changed = list(now)
        else:
            changed = [k for k in now if k in before and before[k] != now[k]]
        if changed:
            what = "\n  ".join(f"{k} = {_config_value(cfg, k)!r}: "
                               f"{'unrecorded' if before is None else before[k]} -> {now[k]}"
                               + (f"\n    files {c}" if (c := _folder_changes(before_files.get(k), folders.get(k, {})))
                                  else "") for k in changed)
            raise ConfigChanged(
                f"{run_dir} was made from other inputs than the config names now (or before they were recorded):"
                f"\n  {what}\nIts checkpoints and results do not belong to these files. Give this run another "
                "run.name, start it over with run.resume=never (the old files move to restarts/), or adopt the "
                "current files on purpose with run.allow_config_change=true.")
    if now and (before != now or before_files != folders):
        atomic_write_text(record, json.dumps({**now, _FILES: folders} if folders else now, indent=1) + "\n")
    return now


def start_run(cfg: Config) -> RunContext:
    info = dist.init(cfg.run.get("device", "auto"))
    dist.set_deterministic(bool(cfg.run.get("deterministic", False)))
    dist.seed_all(int(cfg.run.seed))
    run_dir = run_dir_of(cfg)
    setup_python_logging(run_dir)  # first, so that taking over a stale lock is written in log.txt
    lock, error, inputs = None, None, None
    if dist.is_main():
        try:
            lock = RunLock(run_dir)
            lock.acquire()
        except RunFolderLocked as e:
            lock, error = None, e
    if dist.is_main() and error is None:
        try:
            _check_config(cfg, run_dir)
            inputs = _check_inputs(cfg, run_dir)
        except (ConfigChanged, ValueError) as e:
            error = e
    errors = dist.all_gather_object(None if error is None else (type(error).__name__, str(error)))
    if errors[0] is not None:  # rank 0 decides for every rank
        if lock is not None:
            lock.release()
        kind, message = errors[0]
        raise (error if error is not None else {"RunFolderLocked": RunFolderLocked, "ValueError": ValueError}.get(kind, ConfigChanged)(message))
    if dist.is_main():
        remove_stale_temps(run_dir, run_dir / "checkpoints")
        save_config(cfg, run_dir / "config.yaml")
        env = {"git_sha": _git_sha(), "python": sys.version.split()[0], "torch": torch.__version__,
               "platform": platform.platform(), "world_size": info.world_size, "device": str(info.device),
               "cuda": torch.version.cuda, "seed": cfg.run.seed, "dist_source": info.source}
        atomic_write_text(run_dir / "env.json", json.dumps(env, indent=2) + "\n")
    dist.barrier()
    return RunContext(cfg=cfg, run_dir=run_dir, device=info.device,
                      ckpt=CheckpointManager(run_dir, keep=int(cfg.run.get("keep_checkpoints", 2)),
                                             project=cfg.run.get("project")), lock=lock, inputs=inputs)

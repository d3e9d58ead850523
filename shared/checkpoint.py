"""Atomic checkpoints, a ``last.txt`` pointer, keep-N retention and exact auto-resume.

Write order (as big_vision/fvcore): data to a temp file in the same folder, fsync, ``os.replace``
onto the final name, then the pointer the same way, then prune. A crash at any point leaves the
previous checkpoint and pointer intact; the temp file it leaves (``.<name>.<random>.tmp``) is removed
by ``remove_stale_temps`` when the run starts again. Files get the mode a plain ``open`` would give
(0666 less the umask, or the mode of the file they replace), not mkstemp's 0600.

Every checkpoint a run writes records its project (``state["project"]``); ``check_project`` and
``load_weights(..., project=)`` turn another project's checkpoint into a one-line error.
"""
from __future__ import annotations

import errno
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
_TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # mkstemp(prefix=".<name>.", suffix=".tmp")


class CheckpointError(RuntimeError):
    pass


class UnreadableCheckpoints(CheckpointError):
    """Checkpoint files exist but none loads: resuming would silently start over."""

    def __init__(self, message: str, files: list[Path]):
        super().__init__(message)
        self.files = files


def _umask() -> int:
    try:  # Linux >= 4.7: read it without changing it (os.umask would race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """What ``open(path, "w")`` would leave: the replaced file's mode, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


class DiskFullError(OSError):
    """A save that ran out of space (ENOSPC, EDQUOT) or hit the file-size limit (EFBIG)."""


_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _atomic_write(path: str | os.PathLike, write_fn, size: int | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            kept = f"the previous {path.name} is kept" if path.exists() else f"nothing was written at {path.name}"
            raise DiskFullError(e.errno, f"could not write {path}" + (f" ({size / 1e6:.1f} MB)" if size else "")
                                + f": {os.strerror(e.errno)}; {kept} (its partial copy was removed). Free space "
                                "on that disk (or keep fewer checkpoints: run.keep_checkpoints) and run the "
                                "same command again to resume") from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    data = text.encode()
    _atomic_write(path, lambda f: f.write(data), len(data))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write(path, lambda f: f.write(buf.getbuffer()), buf.getbuffer().nbytes)


def remove_stale_temps(*folders: str | os.PathLike) -> list[Path]:
    """Delete the temp files an atomic write left when its process died mid-save. Call it only while
    holding the run folder's lock: another live writer's temp files look the same."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _TEMP_FILE.match(p.name) and p.is_file():
                size = p.stat().st_size
                p.unlink(missing_ok=True)
                removed.append(p)
                log.info("removed %s (%d bytes), left by a save that was interrupted", p, size)
    return removed


def check_project(state: Any, project: str | None, path: str | os.PathLike) -> None:
    """A one-line error when ``state`` (a loaded checkpoint) records a project other than ``project``."""
    if project is None or not isinstance(state, dict) or "project" not in state:
        return
    if state["project"] != project:
        raise CheckpointError(f"{path} is a checkpoint of project '{state['project']}'"
                              + (f" (its config: {state['config']['run'].get('name')})"
                                 if isinstance(state.get("config"), dict) and isinstance(state["config"].get("run"), dict)
                                 else "")
                              + f", not of '{project}': give a checkpoint this project wrote")


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

    def __init__(self, run_dir: str | os.PathLike, keep: int = 2, project: str | None = None):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep
        self.project = project  # recorded in every file written (unless the state names one)
        self.loaded_path: Path | None = None

    def _stamped(self, state: dict) -> dict:
        return {**state, "project": self.project} if self.project and "project" not in state else state

    @property
    def pointer(self) -> Path:
        return self.dir / "last.txt"

    def save(self, state: dict, step: int) -> Path:
        path = self.dir / f"step_{step:09d}.pt"
        atomic_torch_save(self._stamped(state), path)
        atomic_write_text(self.pointer, path.name + "\n")
        self._prune()
        return path

    def save_best(self, state: dict) -> Path:
        path = self.dir / "best.pt"
        atomic_torch_save(self._stamped(state), path)
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
        """The newest loadable checkpoint, skipping unreadable ones (a truncated copy, a full disk); None
        when the run has none. Raises ``UnreadableCheckpoints`` naming the files when there are step
        files (or a pointer) but none loads: resuming must not silently start over."""
        candidates = []
        latest = self.latest_path()
        if latest is not None:
            candidates.append(latest)
        candidates += [p for p in reversed(self._step_files()) if p not in candidates]
        errors = []
        for path in candidates:
            try:
                state = torch.load(path, map_location=map_location, weights_only=False)
            except Exception as e:  # corrupt or truncated file: report and try the previous one
                log.warning("could not load checkpoint %s (%s: %s); trying an older one", path, type(e).__name__, e)
                errors.append(f"{path.name} ({path.stat().st_size} bytes): {type(e).__name__}: {str(e)[:200]}")
                continue
            if not (isinstance(state, dict) and "step" in state):
                log.warning("checkpoint %s holds %s, not a run checkpoint; trying an older one", path, _describe(state))
                errors.append(f"{path.name}: holds {_describe(state)}")
                continue
            self.loaded_path = path
            return state
        if errors:
            raise UnreadableCheckpoints(
                f"none of the {len(errors)} checkpoints in {self.dir} loads, so the run cannot resume:\n  "
                + "\n  ".join(errors) + "\nRestore a good copy, or start over on purpose with "
                "run.restart_on_corrupt=true (the files are kept) or run.resume=never.", candidates)
        if self.pointer.exists():
            name = self.pointer.read_text().strip()
            raise UnreadableCheckpoints(
                f"{self.pointer} names {name}, but {self.dir} holds no checkpoint file: the run's checkpoints "
                "were removed. Restore them, or start over on purpose with run.restart_on_corrupt=true or "
                "run.resume=never.", [self.pointer])
        return None

    def move_aside(self, dest: str | os.PathLike) -> list[Path]:
        """Move the step files and the pointer to ``dest`` (a deliberate restart keeps the old run's files)."""
        dest = Path(dest)
        moved = []
        for p in self._step_files() + ([self.pointer] if self.pointer.exists() else []):
            dest.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest / p.name)
            moved.append(dest / p.name)
        return moved


def _describe(obj: Any) -> str:
    """A short account of what a loaded object is, for error messages."""
    if isinstance(obj, dict):
        keys = list(obj)[:6]
        return f"a dict with keys {keys}{' ...' if len(obj) > 6 else ''}"
    if isinstance(obj, (list, tuple)):
        kinds = sorted({type(x).__name__ for x in obj})
        return f"a pickled {type(obj).__name__} of {len(obj)} items ({', '.join(kinds) or 'empty'})"
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    return f"a pickled {type(obj).__module__}.{type(obj).__qualname__}"


def _sniff(path: Path) -> str | None:
    """What a file that torch cannot load looks like, from its first bytes (None: nothing recognisable)."""
    head = path.read_bytes()[:512] if path.stat().st_size else b""
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return None  # a zip: torch's own format (truncated or damaged if it does not load)
    if head[:1] == b"\x80":
        return None  # a pickle
    if head.lstrip()[:1] in (b"<",) and b"html" in head.lower():
        return "an HTML page (a download that saved an error or login page?)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the weights (run git lfs pull)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(c.isprintable() or c.isspace() for c in text):
        first = text.strip().splitlines()[0][:80] if text.strip() else ""
        return f"a text file (it begins {first!r})"
    return None


def _numpy_globals() -> list:
    """The numpy types an RNG state (``np.random.get_state()``) pickles: allowed in weights-only loads."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype("uint32"))]


def _torch_load(path: Path) -> Any:
    """``torch.load`` weights-only when the file allows (tensors, containers, numpy arrays); a file that
    needs full unpickling is loaded so with a warning naming it; anything else is an error saying what
    the file holds."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = e
    what = _sniff(path)
    if what is not None:
        raise CheckpointError(f"{path} is not a weights file: it is {what}") from first
    if "weights_only" not in str(first) and "Unsupported global" not in str(first):
        raise CheckpointError(f"{path} cannot be read as PyTorch weights ({type(first).__name__}: "
                              f"{str(first).splitlines()[0][:200]}); is the file complete?") from first
    log.warning("%s holds Python objects besides tensors (%s); loading it with full unpickling: use only "
                "files you trust", path, str(first).splitlines()[-1][:160] if str(first) else type(first).__name__)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path} cannot be read as PyTorch weights ({type(e).__name__}: {e})") from e


def read_checkpoint(path: str | os.PathLike, project: str | None = None) -> Any:
    """What a local weights or checkpoint file holds (``.safetensors`` included), read weights-only where
    the file allows; with ``project``, a checkpoint another project wrote is refused in one line.
    Errors name the file and say what it holds."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    else:
        obj = _torch_load(path)
    check_project(obj, project, path)
    return obj


def state_dict_of(obj: Any, path: str | os.PathLike, key: str | None = None) -> dict:
    """The state dict in what ``read_checkpoint`` returned: the object itself, its ``key`` (or 'model' /
    'state_dict') entry, or a whole pickled ``nn.Module``'s; DDP's ``module.`` prefix stripped."""
    if isinstance(obj, torch.nn.Module):
        log.info("%s holds a whole %s; using its state_dict()", path, type(obj).__name__)
        obj = obj.state_dict()
    if key is not None and isinstance(obj, dict) and key not in obj and not _is_state_dict(obj):
        raise CheckpointError(f"{path} has no '{key}' entry: it holds {_describe(obj)}")
    for k in ([key] if key else []) + ["model", "state_dict"]:
        if isinstance(obj, dict) and k in obj and isinstance(obj[k], dict):
            obj = obj[k]
            break
    if not _is_state_dict(obj):
        raise CheckpointError(f"{path} holds {_describe(obj)}, not a state dict (names -> tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(path: str | os.PathLike, key: str | None = None, project: str | None = None) -> dict:
    """A state dict from a local file: a raw state dict, a checkpoint holding one under ``key`` (or
    'model' / 'state_dict'), a whole pickled ``nn.Module``, or a ``.safetensors`` file. With ``project``,
    a checkpoint another project wrote is refused in one line. Errors name the file and say what it holds."""
    return state_dict_of(read_checkpoint(path, project), Path(path).expanduser(), key)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj) and any(
        isinstance(v, torch.Tensor) for v in obj.values())

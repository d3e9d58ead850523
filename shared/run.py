"""What every training entry does first: distributed init, seeding, the run folder, resume.

    ctx = start_run(cfg)             # runs/<project>/<name>/, config.yaml, env.json, logging
    state = ctx.resume()             # the last checkpoint's dict, or None
    ...
    ctx.save(step, {...})            # atomic; rank 0 only
"""
from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from shared import dist
from shared.checkpoint import CheckpointManager, atomic_write_text, rng_state
from shared.config import Config, config_diff, load_yaml, save_config
from shared.logging import MetricLogger, setup_python_logging

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    pass


def _git_sha() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL,
                                       cwd=Path(__file__).parent).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass
class RunContext:
    cfg: Config
    run_dir: Path
    device: torch.device
    ckpt: CheckpointManager
    logger: MetricLogger | None = None

    def resume(self) -> dict | None:
        """The state to continue from: ``run.resume`` = auto (the run's last checkpoint), never, or a path."""
        mode = self.cfg.run.get("resume", "auto")
        if mode == "never":
            return None
        if mode not in ("auto", None):
            path = Path(mode)
            if not path.is_file():
                raise FileNotFoundError(f"run.resume={mode}: no such checkpoint")
            return torch.load(path, map_location="cpu", weights_only=False)
        state = self.ckpt.load_latest()
        if state is not None:
            log.info("resuming %s from step %s", self.run_dir, state.get("step"))
        return state

    def open_logger(self, step: int | None) -> MetricLogger:
        self.logger = MetricLogger(self.run_dir, purge_step=step)
        if step is None:
            self.logger.text("config", "```\n" + self.cfg.dump() + "\n```")
        return self.logger

    def save(self, step: int, state: dict) -> None:
        if dist.is_main():
            self.ckpt.save({"step": step, "rng": rng_state(), "config": self.cfg.to_dict(), **state}, step)
        dist.barrier()

    def nonfinite_guard(self) -> "NonFiniteGuard":
        return NonFiniteGuard(self.device, self.ckpt.dir)

    def write_results(self, results: dict, name: str = "results.json") -> Path:
        path = self.run_dir / name
        if dist.is_main():
            atomic_write_text(path, json.dumps(results, indent=2) + "\n")
        return path

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()


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
    return Path(cfg.run.root) / cfg.run.project / cfg.run.name


def start_run(cfg: Config) -> RunContext:
    info = dist.init(cfg.run.get("device", "auto"))
    dist.set_deterministic(bool(cfg.run.get("deterministic", False)))
    dist.seed_all(int(cfg.run.seed))
    run_dir = run_dir_of(cfg)
    setup_python_logging(run_dir)
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = run_dir / "config.yaml"
        if saved.exists():
            diff = config_diff(load_yaml(saved.read_text()) or {}, cfg.to_dict())
            if diff:
                log.warning("config differs from the one this run folder was started with:\n  %s",
                            "\n  ".join(diff))
        save_config(cfg, saved)
        env = {"git_sha": _git_sha(), "python": sys.version.split()[0], "torch": torch.__version__,
               "platform": platform.platform(), "world_size": info.world_size, "device": str(info.device),
               "cuda": torch.version.cuda, "seed": cfg.run.seed, "dist_source": info.source}
        atomic_write_text(run_dir / "env.json", json.dumps(env, indent=2) + "\n")
    dist.barrier()
    return RunContext(cfg=cfg, run_dir=run_dir, device=info.device,
                      ckpt=CheckpointManager(run_dir, keep=int(cfg.run.get("keep_checkpoints", 2))))

"""The training loop every project shares: functions and a small state registry, not a Trainer.

A project keeps its own ``main`` and ``train_step``; the loop holds what every run needs around
them: what to save and restore, where the run is (step, epoch, position in the epoch), when to
log / evaluate / checkpoint, a clock of training time that excludes evaluation and checkpoints,
progress for the whole run (a tqdm bar on a terminal; off a terminal, as in a cluster job, a plain line
in log.txt every ``log_every`` steps), the non-finite-loss guard, bad-sample accounting and logging.

    ctx = start_run(cfg)
    loop = Loop(ctx, steps_per_epoch=len(loader), epochs=cfg.optim.epochs)
    loop.register(model=model, optimizer=opt, ema=ema)     # anything with state_dict/load_state_dict
    loop.vars["best"] = -1.0                               # plain values saved with the checkpoint
    loop.resume()                                          # restores all of it (and per-rank RNG)
    while not loop.done:
        sampler.set_epoch(loop.epoch, start=loop.pos * per_rank)
        for batch in loop.epoch_batches(loader):           # stops at the epoch's end or the last step
            loss = train_step(...)
            loop.end_step(loss, {"train/lr": lr})          # step += 1, guard, bar, logs at log_every
            if loop.itstime(every_epochs=cfg.eval.every):
                with loop.paused():                        # evaluation is not training time
                    loop.log(evaluate(...))
            loop.checkpoint_if_due()
    loop.finish()

Cadence keys read from ``cfg.train``: ``log_every`` (steps), ``ckpt_every_steps`` (0: off) and
``ckpt_every_epochs`` (default 1); the last step always logs and checkpoints. At every log step the
loop logs ``perf/steps_per_s`` (over the last interval) and ``perf/eta_s`` (steps left at this process's
rate on the training clock); a pipeline of several phases passes ``work=run_progress.part(...)`` so
that its loops report one ETA for the whole run.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch

from shared import dist
from shared.checkpoint import rng_state, set_rng_state
from shared.data.robust import BadSampleMonitor
from shared.logging import Progress, ProgressPart, progress, progress_line, stderr_is_tty

log = logging.getLogger(__name__)


def itstime(step: int, every: int | None, total: int | None = None, first: bool = False, last: bool = True) -> bool:
    """big_vision's cadence rule: true every ``every`` steps (``every`` <= 0 or None: never), at step 1 if
    ``first`` and at ``total`` if ``last``. ``step`` counts completed steps (1 after the first)."""
    if last and total is not None and step == total:
        return True
    if first and step == 1:
        return True
    return bool(every) and every > 0 and step > 0 and step % every == 0


class Clock:
    """Training wall time: runs except while paused. CUDA work is synchronised at every boundary so
    queued kernels are charged to the side that launched them."""

    def __init__(self, device: torch.device):
        self.device, self.total, self._t0 = device, 0.0, None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        if self._t0 is None:
            self._sync()
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self._t0 is not None:
            self._sync()
            self.total += time.perf_counter() - self._t0
            self._t0 = None

    def read(self) -> float:
        return self.total + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    @property
    def running(self) -> bool:
        return self._t0 is not None


class Loop:
    def __init__(self, ctx, steps_per_epoch: int, epochs: int | None = None, max_steps: int | None = None,
                 samples_per_step: int | None = None, desc: str | None = None, work: ProgressPart | None = None):
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
        if epochs is None and max_steps is None:
            raise ValueError("give epochs, max_steps or both")
        self.ctx, self.cfg, self.device = ctx, ctx.cfg, ctx.device
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs, self.max_steps = epochs, max_steps
        full = epochs * self.steps_per_epoch if epochs is not None else None
        self.total_steps = int(min(x for x in (full, max_steps) if x is not None))  # for the bar and progress
        self.samples_per_step = samples_per_step
        t = self.cfg.get("train", {}) or {}
        self.log_every = int(t.get("log_every", 0) or 0)
        self.ckpt_every_steps = int(t.get("ckpt_every_steps", 0) or 0)
        self.ckpt_every_epochs = int(t.get("ckpt_every_epochs", 1) or 0)
        data = self.cfg.get("data", {}) or {}
        self.bad = BadSampleMonitor(float(data.get("max_bad_fraction", 0.0) or 0.0), "train",
                                    epoch_size=self.steps_per_epoch * (samples_per_step or 0) or None)
        self.step = self.epoch = self.pos = 0
        self.vars: dict[str, Any] = {}
        self._objects: dict[str, Any] = {}
        self.clock = Clock(self.device)
        self.guard = ctx.nonfinite_guard()
        self.logger = None
        self.resumed = False
        self._desc = desc or f"{self.cfg.run.project} {self.cfg.run.name}"
        self._bar = None
        self._run_wide = work is not None  # the ETA is a whole pipeline's, not this loop's
        self.work = work if work is not None else Progress(self.total_steps, clock=self.clock.read)
        self._started = self._plain = False
        self._last_saved = -1
        self._rate_t0, self._rate_step = None, 0
        self._logged_time = 0.0

    # -- what is saved -------------------------------------------------------------------------
    def register(self, **objects) -> None:
        """Objects saved and restored by name: each needs ``state_dict()`` and ``load_state_dict()``."""
        for name, obj in objects.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"loop.register({name}=...): {type(obj).__name__} has no state_dict/load_state_dict")
            if name in self._objects or name in ("loop", "rng", "step", "config", "project"):
                raise ValueError(f"loop.register: the name {name!r} is taken")
            self._objects[name] = obj

    def state_dict(self) -> dict:
        """Everything a checkpoint holds. RNG states are gathered from every rank (each resumes its own)."""
        rngs = dist.all_gather_object(rng_state())
        return {**{n: o.state_dict() for n, o in self._objects.items()},
                "loop": {"step": self.step, "epoch": self.epoch, "pos": self.pos, "train_time": self.clock.read(),
                         "vars": dict(self.vars), "bad": self.bad.state_dict(), "rng_per_rank": rngs}}

    def load_state_dict(self, state: dict) -> None:
        missing = [n for n in self._objects if n not in state]
        if missing:
            raise KeyError(f"the checkpoint has no {missing} (it holds {sorted(state)}); was it written by "
                           "another version of this project?")
        for n, o in self._objects.items():
            o.load_state_dict(state[n])
        s = state["loop"]
        self.step, self.epoch, self.pos = int(s["step"]), int(s["epoch"]), int(s["pos"])
        self.clock.total = self._logged_time = float(s["train_time"])
        self.vars.update(s["vars"])
        self.bad.load_state_dict(s["bad"])
        rngs = s.get("rng_per_rank") or []
        if len(rngs) == dist.world_size():
            set_rng_state(rngs[dist.rank()])
        elif rngs:
            log.warning("checkpoint was written by %d processes, this run has %d: RNG streams are re-seeded "
                        "per rank, so the data order is kept but augmentation draws differ", len(rngs),
                        dist.world_size())
            dist.seed_all(int(self.cfg.run.seed) + self.step)

    def resume(self) -> bool:
        """Restore the run's latest checkpoint if there is one; open the logger either way (log lines a
        killed run wrote after its last checkpoint are dropped). True when something was restored."""
        state = self.ctx.resume()
        if state is not None:
            self.load_state_dict(state)
            self.resumed = True
            self._last_saved = self.step
            self.work.skip(self.step)  # done by an earlier process: not timed here
            log.info("resumed at step %d (epoch %d, position %d), %.1f s of training so far",
                     self.step, self.epoch, self.pos, self.clock.total)
        self.logger = self.ctx.open_logger(self.step)
        return self.resumed

    # -- where the run is ----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """After the last epoch (batches skipped as unreadable included) or at ``max_steps``."""
        return ((self.epochs is not None and self.epoch >= self.epochs)
                or (self.max_steps is not None and self.step >= self.max_steps))

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return min(1.0, self.step / self.total_steps)

    def itstime(self, every_steps: int | None = None, every_epochs: int | None = None, last: bool = True,
                first: bool = False) -> bool:
        """Right after ``end_step``: is an event with this cadence due now? (``every_epochs`` fires at the
        step that completes the epoch.)"""
        if last and self.done:
            return True
        if itstime(self.step, every_steps, first=first, last=False):
            return True
        return bool(every_epochs) and self.pos == 0 and self.step > 0 and self.epoch % every_epochs == 0

    # -- the step ------------------------------------------------------------------------------
    def epoch_batches(self, loader: Iterable) -> Iterator:
        """The loader's batches until the epoch ends or the run's last step. Batches whose every item was
        unreadable (``batch["bad"]`` from ``collate_skipping_bad`` and no good item) are counted and
        skipped, on every rank at once when any rank's batch is empty (so DDP's collectives stay
        matched); the position in the epoch still advances, so a resume lands on the same batch."""
        if self.done:
            return
        if self.pos == 0:
            self.bad.reset()
        if not self._started:
            self._start_progress()
        self.clock.start()
        self._rate_t0, self._rate_step = time.perf_counter(), self.step
        start_epoch = self.epoch
        # A DataLoader draws its workers' base seed from the global torch RNG when its iterator is made:
        # keep that draw out of the global stream, or a run resumed mid-epoch (one extra iterator) would
        # see different dropout/noise draws than the uninterrupted run.
        rng = torch.get_rng_state()
        batches = iter(loader)
        torch.set_rng_state(rng)
        for batch in batches:
            if isinstance(batch, dict) and "bad" in batch:
                good = len(batch.get("index", ())) if batch.get("index") is not None else 0
                self.bad.update(good, batch["bad"])
                if self._fewest_on_any_rank(good) == 0:  # every rank skips together (DDP stays in step)
                    self._advance_position()
                    if self.epoch != start_epoch or self.done:
                        break
                    continue
            yield batch
            if self.epoch != start_epoch or self.done:
                break
        self.clock.stop()

    def _start_progress(self) -> None:
        self._started = True
        self.work.start()
        self._plain = not stderr_is_tty()
        if not self._plain:
            self._bar = progress(total=self.total_steps, initial=self.step, desc=self._desc)

    def _fewest_on_any_rank(self, n: int) -> int:
        if not dist.is_dist():
            return n
        t = torch.tensor([n], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return int(t.item())

    def _advance_position(self) -> None:
        self.pos += 1
        if self.pos >= self.steps_per_epoch:
            self.epoch, self.pos = self.epoch + 1, 0
            if self.logger is not None:
                self.logger.log(self.step, self.bad.summary())

    def end_step(self, loss: torch.Tensor | None = None, metrics: dict | None = None) -> None:
        """One optimizer step is done: count it, guard the loss, move the bar, log at ``log_every``
        (the loss all-reduced across ranks, ``metrics`` as given: tensors are read only when logged)."""
        self.step += 1
        self._advance_position()
        if loss is not None:
            self.guard.update(loss, self.step)
        self.work.advance(1)
        if self.done:
            self.work.finish()  # an epoch shortened by skipped batches still ends the work
        if self._bar is not None:
            self._bar.update(1)
        if self.done or itstime(self.step, self.log_every):
            self.guard.check()
            out = {}
            if loss is not None:
                out["train/loss"] = dist.all_reduce_mean(loss.detach().float()).item()
                self._bar.set_postfix(loss=f"{out['train/loss']:.4g}", refresh=False) if self._bar else None
            for k, v in (metrics or {}).items():
                out[k] = v.item() if isinstance(v, torch.Tensor) else v
            now = time.perf_counter()
            if self._rate_t0 is not None and self.step > self._rate_step:
                rate = (self.step - self._rate_step) / max(now - self._rate_t0, 1e-9)
                out["perf/steps_per_s"] = rate
                if self.samples_per_step:
                    out["perf/samples_per_s"] = rate * self.samples_per_step
            self._rate_t0, self._rate_step = now, self.step
            out["train/epoch"] = self.step / self.steps_per_epoch
            out["budget/train_time_s"] = self._logged_time = self.clock.read()
            eta = self.work.eta()
            if eta is not None:
                out["perf/eta_s"] = eta
            self.log(out)
            if self._plain:
                log.info("%s", self._progress_line(out))

    def _progress_line(self, out: dict) -> str:
        line = progress_line("step", self.step, self.total_steps, out.get("perf/steps_per_s"), "steps",
                             out.get("perf/eta_s"), "train", out["budget/train_time_s"],
                             run_fraction=self.work.fraction if self._run_wide else None)
        loss = f" | loss {out['train/loss']:.4g}" if "train/loss" in out else ""
        return f"{self._desc}: {line}{loss}"

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.logger is None:
            raise RuntimeError("call loop.resume() before logging: it opens the logger")
        self.logger.log(self.step if step is None else step, metrics)

    @contextmanager
    def paused(self):
        """Time spent inside is not training time (evaluation, checkpoints, figures)."""
        was = self.clock.running
        self.clock.stop()
        try:
            yield
        finally:
            if was:
                self.clock.start()
                self._rate_t0, self._rate_step = time.perf_counter(), self.step

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        return self.step != self._last_saved and self.itstime(self.ckpt_every_steps, self.ckpt_every_epochs)

    def save(self) -> None:
        with self.paused():
            self.guard.check()
            self.ctx.save(self.step, self.state_dict())
            self._last_saved = self.step

    def checkpoint_if_due(self) -> bool:
        if self.checkpoint_due():
            self.save()
            return True
        return False

    def finish(self) -> None:
        """The final checkpoint (if the last step has none yet), then close the bar. The run folder's lock
        is released by ``ctx.close()`` (or the process's exit)."""
        if self.logger is not None and self.clock.read() != self._logged_time:
            self.log({"budget/train_time_s": self.clock.read()})  # the final figure (none on a re-run)
        if self.step != self._last_saved and self.step > 0:
            self.save()
        self.work.finish()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


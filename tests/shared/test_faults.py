"""Fault injection on a tiny run built on shared/loop.py: processes killed (SIGKILL, as the OOM killer or a
preemption does) at chosen and random steps, inside a checkpoint save, in the middle of a log line; truncated
and missing checkpoints; two writers on one folder. Every outcome is checked against the uninterrupted run:
each step logged once, the same losses bit for bit, the same final weights, no temp files left.

The runs are forked from the test process (torch is already imported, so a run costs milliseconds) and
killed for real; the training code is the shared loop, the shared run folder and checkpoints, a small MLP
with dropout (the global RNG must resume too) and a resumable sampler with per-sample augmentation noise.
"""
import json
import multiprocessing
import os
import random
import signal
import time
import traceback
from pathlib import Path

import pytest
import torch

from shared import checkpoint as ck
from shared.config import load_config
from shared.data.sampling import ResumableSampler
from shared.logging import MetricLogger, read_metrics
from shared.loop import Loop
from shared.run import start_run

pytestmark = pytest.mark.timeout(300)  # a hang guard; the suite takes ~20 s of CPU

# start_run's dist.set_deterministic calls torch.use_deterministic_algorithms, whose first call imports
# torch._inductor (seconds of CPU): import it once here, not in every forked run
import torch._inductor  # noqa: E402,F401

CONFIG = """\
run:
  inherit: shared
  project: faults
  device: cpu
train:
  inherit: shared
  log_every: 1
  ckpt_every_steps: 3        # with the epoch ends: checkpoints at 3 6 8 9 12 15 16 18 21 24
data:
  size: 64
  batch_size: 8              # 8 steps an epoch
optim:
  lr: 0.05
  momentum: 0.9
  epochs: 3
"""
TOTAL = 24
SAVES = [3, 6, 8, 9, 12, 15, 16, 18, 21, 24]


class Points(torch.utils.data.Dataset):
    """Fixed inputs, a smooth target, and augmentation noise drawn from the sampler's per-sample seed."""

    def __init__(self, size: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, 4, generator=g)
        self.y = torch.sin(self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]))[:, None]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, item):
        index, seed = item
        noise = 0.05 * torch.randn(4, generator=torch.Generator().manual_seed(seed))
        return {"x": self.x[index] + noise, "y": self.y[index], "index": index}


def train(cfg, sleep: float = 0.0) -> int:
    """The tiny training entry: what a project's train.py does, at toy size."""
    ctx = start_run(cfg)
    ds = Points(cfg.data.size)
    sampler = ResumableSampler(len(ds), seed=cfg.run.seed, shuffle=True, drop_last=True)
    # its own generator: a DataLoader iterator otherwise draws its base seed from the global RNG, and a run
    # resumed mid-epoch makes one iterator more than the uninterrupted run
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.data.batch_size, sampler=sampler, drop_last=True,
                                         generator=torch.Generator())
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    loop = Loop(ctx, steps_per_epoch=len(sampler) // cfg.data.batch_size, epochs=cfg.optim.epochs,
                samples_per_step=cfg.data.batch_size)
    loop.register(model=model, optimizer=opt)
    loop.resume()
    while not loop.done:
        sampler.set_epoch(loop.epoch, start=loop.pos * cfg.data.batch_size)
        model.train()
        for batch in loop.epoch_batches(loader):
            loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loop.end_step(loss)
            if sleep:
                time.sleep(sleep)
            loop.checkpoint_if_due()
    loop.finish()
    ctx.write_results({"steps": loop.step})
    ctx.close()
    return loop.step


# -- faults, installed in the forked child ---------------------------------------------------------------
def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _install(fault):
    """("step", n): killed right after step n, before its checkpoint; ("save", n, phase): killed while saving
    step n's checkpoint: 'mid-write' (half the bytes in the temp file), 'before-replace' (the temp file complete,
    not yet renamed), 'pointer' (the checkpoint in place, last.txt not yet updated); ("log", n): killed
    half-way through writing step n's log line; ("wait", n, file): after step n, wait until ``file`` exists
    (holding the run folder meanwhile)."""
    if fault is None:
        return
    kind, n = fault[0], fault[1]
    if kind == "wait":
        real_end = Loop.end_step

        def end_step(self, *a, **k):
            real_end(self, *a, **k)
            while self.step == n and not Path(fault[2]).exists():
                time.sleep(0.01)
        Loop.end_step = end_step
    elif kind == "step":
        real_end = Loop.end_step

        def end_step(self, *a, **k):
            real_end(self, *a, **k)
            if self.step == n:
                _die()
        Loop.end_step = end_step
    elif kind == "save":
        phase, real = fault[2], ck._atomic_write
        saving = {"now": False}

        def atomic_write(path, write_fn, size=None):
            path = Path(path)
            if path.name == f"step_{n:09d}.pt":
                saving["now"] = True
                if phase in ("mid-write", "before-replace"):
                    def killed(f):
                        if phase == "mid-write":
                            import io
                            buf = io.BytesIO()
                            write_fn(buf)
                            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                        else:
                            write_fn(f)
                        f.flush()
                        os.fsync(f.fileno())
                        _die()
                    return real(path, killed, size)
            if path.name == "last.txt" and saving["now"] and phase == "pointer":
                _die()
            return real(path, write_fn, size)
        ck._atomic_write = atomic_write
    elif kind == "log":
        real_log = MetricLogger.log

        def log(self, step, metrics):
            if step == n and "train/loss" in metrics:
                line = json.dumps({"step": step, "time": time.time(), **metrics}).encode()
                with open(self.jsonl, "ab") as f:
                    f.write(line[: len(line) // 2])
                _die()
            real_log(self, step, metrics)
        MetricLogger.log = log
    else:
        raise ValueError(fault)


def _child(cfg_file, overrides, fault, sleep, err_file):
    try:
        torch.set_num_threads(1)
        # a SIGKILL loses nothing the process wrote (the page cache survives it; fsync matters for power cuts),
        # so the children skip fsync, which on a busy disk costs more than the training
        os.fsync = lambda fd: None
        _install(fault)
        train(load_config(cfg_file, overrides), sleep)
    except BaseException:
        Path(err_file).write_text(traceback.format_exc())
        os._exit(1)
    os._exit(0)


class Runs:
    def __init__(self, root: Path):
        self.root = root
        (root / "tiny.yaml").write_text(CONFIG)
        self.n = 0

    def dir(self, name: str) -> Path:
        return self.root / "runs" / "faults" / name

    def start(self, name, fault=None, *overrides, sleep=0.0):
        self.n += 1
        err = self.root / f"err{self.n}.txt"
        proc = multiprocessing.get_context("fork").Process(
            target=_child, args=(self.root / "tiny.yaml", [f"run.root={self.root / 'runs'}", f"run.name={name}",
                                                          *overrides], fault, sleep, err))
        proc.start()
        proc.err = err
        return proc

    def run(self, name, fault=None, *overrides, sleep=0.0, timeout=60):
        proc = self.start(name, fault, *overrides, sleep=sleep)
        proc.join(timeout)
        assert proc.exitcode is not None, "the tiny run hung"
        return proc.exitcode, proc.err.read_text() if proc.err.exists() else ""


def losses(run_dir):
    return [(m["step"], m["train/loss"]) for m in read_metrics(run_dir) if "train/loss" in m]


def final_weights(run_dir):
    state = torch.load(run_dir / "checkpoints" / f"step_{TOTAL:09d}.pt", weights_only=False)
    return state["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    runs = Runs(tmp_path_factory.mktemp("reference"))
    assert runs.run("straight") == (0, "")
    run = runs.dir("straight")
    got = losses(run)
    assert [s for s, _ in got] == list(range(1, TOTAL + 1))
    return got, final_weights(run)


def assert_same_as_reference(run_dir, reference):
    ref_losses, ref_weights = reference
    assert losses(run_dir) == ref_losses  # every step once, bit-identical
    weights = final_weights(run_dir)
    assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)
    assert json.loads((run_dir / "results.json").read_text()) == {"steps": TOTAL}
    leftovers = [p for p in run_dir.rglob("*.tmp")]
    assert not leftovers, leftovers
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt")) == [
        f"step_{s:09d}.pt" for s in SAVES[-2:]]
    assert (run_dir / "run.lock").read_text() == ""
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_kills_at_chosen_points_including_inside_saves(tmp_path, reference):
    runs = Runs(tmp_path)
    run = runs.dir("killed")
    plan = [("step", 5), ("save", 9, "mid-write"), ("save", 12, "before-replace"), ("save", 15, "pointer"),
            ("log", 20)]
    for fault in plan:
        code, err = runs.run("killed", fault)
        assert code == -signal.SIGKILL, (fault, err)
        if fault[0] == "save" and fault[2] != "pointer":  # a temp file was left behind ...
            assert list((run / "checkpoints").glob(".step_*.tmp")), fault
        if fault[0] == "log":
            assert not (run / "metrics.jsonl").read_text().endswith("\n")  # ... and a torn line
    assert runs.run("killed") == (0, "")
    assert_same_as_reference(run, reference)


def test_kills_at_random_points(tmp_path, reference):
    rng = random.Random(9)
    runs = Runs(tmp_path)
    kinds = ["step", "log", "mid-write", "before-replace", "pointer"]
    done_at = 0
    for _ in range(4):
        kind = rng.choice(kinds)
        if kind in ("step", "log"):
            fault = (kind, rng.randint(done_at + 1, TOTAL))
        else:
            later = [s for s in SAVES if s > done_at]
            fault = ("save", rng.choice(later), kind)
        code, err = runs.run("random", fault)
        assert code in (0, -signal.SIGKILL), (fault, err)
        if code == 0:
            break
        state = ck.CheckpointManager(runs.dir("random")).latest_path()
        done_at = int(state.stem.split("_")[1]) if state else 0
    assert runs.run("random") == (0, "")
    assert_same_as_reference(runs.dir("random"), reference)


def test_external_kills_at_random_times(tmp_path, reference):
    rng = random.Random(5)
    runs = Runs(tmp_path)
    run = runs.dir("external")
    for _ in range(3):
        proc = runs.start("external", None, sleep=0.01)
        deadline = time.time() + 60
        while not (run / "metrics.jsonl").exists() and proc.is_alive() and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.2))
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(60)
        assert proc.exitcode in (0, -signal.SIGKILL), proc.err.read_text() if proc.err.exists() else ""
    assert runs.run("external") == (0, "")
    assert_same_as_reference(run, reference)


def test_truncated_checkpoints(tmp_path, reference):
    runs = Runs(tmp_path)
    run = runs.dir("truncated")
    assert runs.run("truncated", ("step", 10))[0] == -signal.SIGKILL  # checkpoints 8 and 9 on disk
    newest = run / "checkpoints" / "step_000000009.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    assert runs.run("truncated") == (0, "")  # falls back to step 8
    assert_same_as_reference(run, reference)

    run = runs.dir("all_truncated")
    assert runs.run("all_truncated", ("step", 10))[0] == -signal.SIGKILL
    for p in (run / "checkpoints").glob("step_*.pt"):
        p.write_bytes(p.read_bytes()[:1000])
    before = (run / "metrics.jsonl").read_text()
    code, err = runs.run("all_truncated")
    assert code == 1 and "UnreadableCheckpoints: none of the 2 checkpoints" in err
    assert "step_000000009.pt (1000 bytes)" in err and "step_000000008.pt (1000 bytes)" in err
    assert (run / "metrics.jsonl").read_text() == before  # stopped before touching anything
    assert runs.run("all_truncated", None, "run.restart_on_corrupt=true") == (0, "")
    assert_same_as_reference(run, reference)  # started over from step 0: the same run
    (kept,) = (run / "restarts").iterdir()
    assert sorted(p.name for p in (kept / "checkpoints").iterdir()) == ["last.txt", "step_000000008.pt",
                                                                        "step_000000009.pt"]


def test_missing_checkpoints(tmp_path, reference):
    runs = Runs(tmp_path)
    run = runs.dir("missing")
    assert runs.run("missing", ("step", 10))[0] == -signal.SIGKILL
    for p in (run / "checkpoints").glob("step_*.pt"):
        p.unlink()
    code, err = runs.run("missing")
    assert code == 1 and "last.txt names step_000000009.pt, but" in err and "holds no checkpoint" in err
    # the whole checkpoints folder gone: nothing says a checkpoint existed; the run starts over, and the
    # steps the lost run logged are not logged twice
    for p in (run / "checkpoints").iterdir():
        p.unlink()
    assert runs.run("missing") == (0, "")
    assert_same_as_reference(run, reference)


def test_two_writers(tmp_path, reference):
    runs = Runs(tmp_path)
    run = runs.dir("shared_folder")
    go = tmp_path / "go"
    first = runs.start("shared_folder", ("wait", 2, go))  # trains 2 steps, then holds the folder until told
    deadline = time.time() + 60
    while len(losses(run)) < 2 and first.is_alive() and time.time() < deadline:
        time.sleep(0.01)
    assert first.is_alive() and len(losses(run)) == 2
    code, err = runs.run("shared_folder")
    assert code == 1 and f"RunFolderLocked: run folder {run} is in use by pid {first.pid}" in err
    go.touch()
    first.join(60)
    assert first.exitcode == 0
    assert_same_as_reference(run, reference)  # the refused writer changed nothing

    # a writer killed with SIGKILL leaves its record; the next run sees that process is gone and takes over
    run = runs.dir("dead_writer")
    first = runs.start("dead_writer", ("wait", 4, tmp_path / "never"))
    while len(losses(run)) < 4 and first.is_alive() and time.time() < deadline + 60:
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.join(60)
    assert json.loads((run / "run.lock").read_text())["pid"] == first.pid
    assert runs.run("dead_writer") == (0, "")
    assert f"taking over the lock of pid {first.pid}" in (run / "log.txt").read_text()
    assert_same_as_reference(run, reference)

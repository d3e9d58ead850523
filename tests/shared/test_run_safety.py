"""Issue 9's probes of the run folder, each reproduced on a tiny config: the lock, a changed config,
checkpoints that do not load, torn and duplicated logs, value types, another project's checkpoint,
bad samples per epoch, file modes and stale temp files."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from shared import checkpoint as ck
from shared.config import ConfigError, load_config
from shared.data.robust import BadSample, TooManyBadSamples, collate_skipping_bad
from shared.logging import MetricLogger, read_metrics
from shared.loop import Loop
from shared.run import ConfigChanged, RunFolderLocked, RunLock, start_run

pytestmark = pytest.mark.timeout(300)

BASE = """\
run:
  inherit: shared
  project: toy
  device: cpu
train:
  inherit: shared
  log_every: 1
data:
  max_bad_fraction: 0.02
optim:
  lr: 0.1
  epochs: 2
"""


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "exp.yaml").write_text("base: base.yaml\n")

    def cfg(*overrides):
        return load_config(tmp_path / "exp.yaml", [f"run.root={tmp_path / 'runs'}", *overrides])
    cfg.run_dir = tmp_path / "runs" / "toy" / "exp"
    return cfg


def _holder(run_dir, orphan=False):
    """A forked process that takes the run folder's lock and waits; with ``orphan`` it starts a process that
    inherits the lock (as a data-loader worker does) and exits. Returns (holder pid, inheriting pid)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder
        try:
            os.close(r)
            RunLock(run_dir).acquire()
            child = os.fork() if orphan else -1
            if child == 0:
                time.sleep(60)
                os._exit(0)
            os.write(w, f"{child}\n".encode())
            if not orphan:
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = int(f.readline())
    return pid, child


# -- 1. one writer per run folder -----------------------------------------------------------------------
def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(toy):
    pid, _ = _holder(toy.run_dir)
    try:
        with pytest.raises(RunFolderLocked, match=rf"is in use by pid {pid} on host {socket.gethostname()}, "
                                                  r"started .*log every step twice.*another run.name"):
            start_run(toy())
        assert not (toy.run_dir / "config.yaml").exists()  # refused before touching the folder
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert json.loads((toy.run_dir / "run.lock").read_text())["pid"] == pid  # SIGKILL left its record
    ctx = start_run(toy())
    text = (toy.run_dir / "log.txt").read_text()
    assert f"taking over the lock of pid {pid}" in text and "that process has ended" in text
    assert json.loads((toy.run_dir / "run.lock").read_text())["pid"] == os.getpid()
    ctx.close()
    assert (toy.run_dir / "run.lock").read_text() == ""  # released


def test_a_lock_inherited_by_a_surviving_child_is_named(toy):
    pid, child = _holder(toy.run_dir, orphan=True)
    os.waitpid(pid, 0)
    try:
        with pytest.raises(RunFolderLocked, match=rf"pid {pid} .*that process has ended, but one it started still "
                                                  r"holds the lock .*fuser .*run.lock"):
            start_run(toy())
    finally:
        os.kill(child, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:  # the orphan is reaped by init
        try:
            start_run(toy()).close()
            break
        except RunFolderLocked:
            time.sleep(0.05)
    else:
        pytest.fail("the lock stayed held after its last holder died")


def test_stale_lock_records(toy, monkeypatch):
    lock = RunLock(toy.run_dir)
    toy.run_dir.mkdir(parents=True)
    me = RunLock.me()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # a dead pid; a live pid whose start time says it is another process (the pid was reused): taken over
    for record in ({**me, "pid": dead.pid}, {**me, "pid": os.getppid(), "start_ticks": -1}):
        lock.path.write_text(json.dumps(record))
        lock.acquire()
        lock.release()
    # another host's record cannot be checked from here: refused, saying how to clear it
    lock.path.write_text(json.dumps({**me, "host": "node-17", "pid": 4242, "slurm_job_id": "77"}))
    with pytest.raises(RunFolderLocked, match="pid 4242 on host node-17.*SLURM job 77"):
        lock.acquire()
    # ... unless it is this SLURM job's own earlier run, requeued onto another node
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    lock.acquire()
    lock.release()


# -- 4. types are checked before the run folder exists --------------------------------------------------
@pytest.mark.parametrize("override", ["optim.epochs=abc", "train.ckpt_every_steps=true", "optim.epochs=2.5"])
def test_wrong_types_fail_before_the_run_folder_is_made(toy, override):
    from shared import launch

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"'{key}' = .*\(in command line\): expected an int"):
        launch.main(["--entry", "tests.shared.launch_target", "--config", str(toy.run_dir.parents[2] / "exp.yaml"),
                     f"run.root={toy.run_dir.parents[1]}", override])
    assert not toy.run_dir.parents[1].exists()


# -- 5. a changed config on an existing run folder ------------------------------------------------------
def test_a_changed_config_is_refused_unless_asked_and_the_old_one_is_kept(toy):
    ctx = start_run(toy())
    ctx.write_results({"top1": 0.5})  # results (or checkpoints) made with the first config
    ctx.close()
    with pytest.raises(ConfigChanged, match=r"(?s)these keys differ.*optim.epochs: 2 -> 3\n  optim.lr: 0.1 -> 0.2\n.*"
                                            r"run.allow_config_change=true"):
        start_run(toy("optim.lr=0.2", "optim.epochs=3"))
    assert load_config(toy.run_dir / "config.yaml").optim.lr == 0.1  # untouched
    # keys that do not change what the run computes may differ; the history is kept all the same
    start_run(toy("run.device=cpu", "run.keep_checkpoints=5")).close()
    ctx = start_run(toy("optim.lr=0.2", "run.allow_config_change=true"))
    ctx.close()
    history = sorted((toy.run_dir / "config_history").iterdir())
    assert [load_config(p).optim.lr for p in history][-1] == 0.1 and len(history) >= 1
    assert load_config(toy.run_dir / "config.yaml").optim.lr == 0.2
    # a key added to the code since the run started is not a change of this run's values
    saved = toy.run_dir / "config.yaml"
    saved.write_text(saved.read_text().replace("  allow_config_change: true\n", ""))
    start_run(toy("optim.lr=0.2", "run.allow_config_change=true")).close()
    # starting over on purpose takes the new config (the old run is moved aside by resume)
    ctx = start_run(toy("optim.lr=0.3", "run.resume=never"))
    assert ctx.resume() is None and load_config(toy.run_dir / "config.yaml").optim.lr == 0.3
    ctx.close()
    (moved,) = (toy.run_dir / "restarts").iterdir()
    assert json.loads((moved / "results.json").read_text()) == {"top1": 0.5}
    assert not (toy.run_dir / "results.json").exists()


def test_a_folder_without_checkpoints_or_results_takes_a_corrected_config(toy):
    start_run(toy("optim.lr=5.0")).close()  # say it crashed on a bad value before its first checkpoint
    start_run(toy("optim.lr=0.1")).close()
    assert load_config(toy.run_dir / "config.yaml").optim.lr == 0.1
    assert len(list((toy.run_dir / "config_history").iterdir())) == 1


def test_a_folder_made_from_other_input_files_is_refused(tmp_path):
    """run.input_keys: the weights file and the generated data folder a config names are fingerprinted; a
    finished run is not resumed once their contents change, and a moved copy of the same data is the same."""
    from shared.run import fingerprint_path

    data, weights = tmp_path / "set", tmp_path / "w.pt"
    (data / "frames").mkdir(parents=True)
    (data / "frames" / "a.jpg").write_bytes(b"\x01" * 10)
    (data / "list.txt").write_text("a\n")
    weights.write_bytes(b"weights-1")
    (tmp_path / "exp.yaml").write_text(BASE.replace("data:\n", f"data:\n  root: {data}\n") +
                                       f"model:\n  weights: {weights}\n")

    def cfg(*o):
        return load_config(tmp_path / "exp.yaml", [f"run.root={tmp_path / 'runs'}",
                                                   "run.input_keys=[data.root, model.weights]", *o])
    run_dir = tmp_path / "runs" / "toy" / "exp"
    ctx = start_run(cfg())
    ctx.write_results({"top1": 0.5})
    ctx.close()
    recorded = json.loads((run_dir / "inputs.json").read_text())
    assert recorded["model.weights"].startswith("sha256:") and recorded["data.root"].startswith("folder-sha256:")
    start_run(cfg()).close()                                   # same contents: resumes
    moved = tmp_path / "elsewhere"
    data.rename(moved)
    assert fingerprint_path(moved) == recorded["data.root"]    # the path is not part of a folder's fingerprint
    start_run(cfg(f"data.root={moved}")).close()
    (moved / "frames" / "a.jpg").write_bytes(b"\x02" * 10)     # regenerated: same names and sizes, other pixels
    with pytest.raises(ConfigChanged, match=r"(?s)other inputs.*data.root.*folder-sha256:.*files 1 changed: frames/a.jpg"):
        start_run(cfg(f"data.root={moved}"))
    assert json.loads((run_dir / "inputs.json").read_text()) == recorded  # untouched
    (moved / "frames" / "b.jpg").write_bytes(b"\x03")                 # and one added, one removed: each named
    (moved / "list.txt").unlink()
    with pytest.raises(ConfigChanged, match=r"files 1 added: frames/b.jpg; 1 removed: list.txt; 1 changed: frames/a.jpg"):
        start_run(cfg(f"data.root={moved}"))
    (moved / "frames" / "b.jpg").unlink()
    (moved / "list.txt").write_text("a\n")
    weights.write_bytes(b"weights-2")
    with pytest.raises(ConfigChanged, match="model.weights"):
        start_run(cfg(f"data.root={moved}"))
    start_run(cfg(f"data.root={moved}", "run.allow_config_change=true")).close()  # adopt them on purpose
    start_run(cfg(f"data.root={moved}")).close()
    (run_dir / "inputs.json").unlink()                         # a finished run from before the record
    with pytest.raises(ConfigChanged, match="unrecorded"):
        start_run(cfg(f"data.root={moved}"))
    assert fingerprint_path(None) is None and fingerprint_path("torchvision") == "value:torchvision"
    with pytest.raises(ValueError, match="not a key"):
        start_run(cfg(f"data.root={moved}", "run.input_keys=[model.nope]"))


# -- 2. checkpoints that exist but do not load ----------------------------------------------------------
def _two_checkpoints(toy, *overrides):
    ctx = start_run(toy(*overrides))
    ctx.open_logger(0).log(1, {"train/loss": 1.0})
    for step in (1, 2):
        ctx.save(step, {"w": torch.full((2,), float(step))})
    ctx.close()
    return ctx.ckpt.dir


def test_unloadable_checkpoints_stop_the_run_naming_them(toy):
    ckpts = _two_checkpoints(toy)
    for p in ckpts.glob("step_*.pt"):
        p.write_bytes(p.read_bytes()[:100])  # truncated copies
    ctx = start_run(toy())
    with pytest.raises(ck.UnreadableCheckpoints, match=r"(?s)none of the 2 checkpoints.*step_000000002.pt \(100 "
                                                       r"bytes\).*step_000000001.pt \(100 bytes\)"):
        ctx.resume()
    ctx.close()
    # on purpose: start over, with the old files kept aside
    ctx = start_run(toy("run.restart_on_corrupt=true"))
    assert ctx.resume() is None
    ctx.close()
    (moved,) = (toy.run_dir / "restarts").iterdir()
    assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["last.txt", "step_000000001.pt",
                                                                         "step_000000002.pt"]
    assert (moved / "metrics.jsonl").exists() and not list(ckpts.iterdir())
    assert "run.restart_on_corrupt=true: the previous run's checkpoints, metrics and results moved to" in (
        toy.run_dir / "log.txt").read_text()


def test_resume_never_keeps_the_previous_run(toy):
    _two_checkpoints(toy)
    ctx = start_run(toy("run.resume=never"))
    assert ctx.resume() is None
    ctx.close()
    (moved,) = (toy.run_dir / "restarts").iterdir()
    assert (moved / "checkpoints" / "step_000000002.pt").exists() and not (toy.run_dir / "metrics.jsonl").exists()


# -- 8. the project is recorded in each checkpoint and checked ------------------------------------------
def test_a_checkpoint_of_another_project_is_refused_in_one_line(toy, tmp_path):
    ckpts = _two_checkpoints(toy)
    state = torch.load(ckpts / "step_000000002.pt", weights_only=False)
    assert state["project"] == "toy" and state["step"] == 2
    ctx = start_run(toy())
    ctx.ckpt.save_best({"model": {"w": torch.ones(1)}})  # what projects write themselves records it too
    ctx.close()
    assert torch.load(ckpts / "best.pt", weights_only=False)["project"] == "toy"
    with pytest.raises(ck.CheckpointError, match="best.pt is a checkpoint of project 'toy', not of 'ezvsl'"):
        ck.load_weights(ckpts / "best.pt", key="model", project="ezvsl")
    state["project"] = "ptnl"
    torch.save(state, tmp_path / "other.pt")
    ctx = start_run(toy("run.name=fresh", f"run.resume={tmp_path / 'other.pt'}"))
    with pytest.raises(ck.CheckpointError, match=r"^[^\n]*other.pt is a checkpoint of project 'ptnl' \(its config: "
                                                 r"exp\), not of 'toy'[^\n]*$"):
        ctx.resume()
    ctx.close()
    torch.save(state, ckpts / "step_000000002.pt")  # planted in the run's own folder: the same check
    ctx = start_run(toy())
    with pytest.raises(ck.CheckpointError, match="project 'ptnl'"):
        ctx.resume()
    ctx.close()


# -- 3. torn and duplicated log lines -------------------------------------------------------------------
def _tb_steps(run_dir, tag="train/loss"):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)]


def test_a_torn_last_line_is_dropped_on_open(tmp_path, caplog):
    good = [json.dumps({"step": s, "train/loss": 1.0 / s}) for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(good) + '\n{"step": 4, "train/lo')
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3]  # readers skip it too
    with caplog.at_level("WARNING"):
        logger = MetricLogger(tmp_path, purge_step=3, tensorboard=False)
    assert "dropped 1 line(s) that do not parse (line 4)" in caplog.text
    logger.log(4, {"train/loss": 0.25})
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert (tmp_path / "metrics.jsonl").read_text().endswith("0.25}\n")


def test_a_run_killed_before_its_first_checkpoint_does_not_log_its_first_steps_twice(toy):
    ctx = start_run(toy())
    logger = ctx.open_logger(0)
    for step in (1, 2, 3):
        logger.log(step, {"train/loss": float(step)})
    logger.log(0, {"eval/top1": 0.1})  # a baseline at step 0 is lost with the rest
    logger.close()  # killed here: no checkpoint was written
    ctx.close()
    ctx = start_run(toy())
    assert ctx.resume() is None
    logger = ctx.open_logger(0)
    for step in (1, 2):
        logger.log(step, {"train/loss": 10.0 * step})
    ctx.close()
    assert [(m["step"], m["train/loss"]) for m in read_metrics(toy.run_dir) if "train/loss" in m] == [(1, 10.0), (2, 20.0)]
    assert not [m for m in read_metrics(toy.run_dir) if "eval/top1" in m]
    assert _tb_steps(toy.run_dir) == [(1, 10.0), (2, 20.0)]


def _next_writers_sort_backwards(tmp_dir):
    """Open throw-away TensorBoard writers until the next two of this process get per-process counters that sort
    backwards by name (9 then 10, or 99 then 100): the case where a same-second resume was read out of order."""
    from torch.utils.tensorboard import SummaryWriter

    for i in range(2000):
        SummaryWriter(str(tmp_dir / str(i))).close()
        uid = int(next((tmp_dir / str(i)).glob("events.out.tfevents.*")).name.rsplit(".", 1)[1])
        if str(uid + 1).strip("9") == "":
            return
    raise AssertionError("no writer counter ending in 9s")


def test_a_resumed_run_keeps_what_was_logged_up_to_its_checkpoint(toy, tmp_path):
    _next_writers_sort_backwards(tmp_path / "throwaway")
    ctx = start_run(toy())
    logger = ctx.open_logger(0)
    for step in (1, 2, 3, 4):
        logger.log(step, {"train/loss": float(step)})
    ctx.close()
    ctx = start_run(toy())
    logger = ctx.open_logger(2)  # the checkpoint was at step 2: steps 3 and 4 are trained again
    for step in (3, 4):
        logger.log(step, {"train/loss": 10.0 * step})
    ctx.close()
    want = [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert [(m["step"], m["train/loss"]) for m in read_metrics(toy.run_dir)] == want
    assert _tb_steps(toy.run_dir) == want  # TensorBoard keeps step 2 (logged before its checkpoint)


# -- 6. max_bad_fraction per epoch, its counts in the checkpoint ----------------------------------------
class _Files(torch.utils.data.Dataset):
    """400 samples; those at ``bad`` cannot be read."""

    def __init__(self, bad):
        self.bad = set(bad)

    def __len__(self):
        return 400

    def __getitem__(self, item):
        i, _ = item  # (index, seed) from the ResumableSampler
        if i in self.bad:
            return BadSample(f"clip_{i:03d}.mp4", "moov atom not found")
        return {"index": i, "x": torch.full((3,), i / 400.0)}


def _train(toy, bad, max_steps=None, *overrides):
    from shared.data.sampling import ResumableSampler

    ctx = start_run(toy(*overrides))
    sampler = ResumableSampler(400, shuffle=False, drop_last=True)
    loader = torch.utils.data.DataLoader(_Files(bad), batch_size=48, sampler=sampler, drop_last=True,
                                         collate_fn=collate_skipping_bad)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = Loop(ctx, steps_per_epoch=400 // 48, epochs=2, max_steps=max_steps, samples_per_step=48)
    loop.register(model=model, optimizer=opt)
    loop.resume()
    try:
        while not loop.done:
            sampler.set_epoch(loop.epoch, start=loop.pos * 48)
            for batch in loop.epoch_batches(loader):
                loss = model(batch["x"]).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                loop.end_step(loss)
                loop.checkpoint_if_due()
        loop.finish()
    finally:
        ctx.close()
    return loop


def test_one_bad_file_early_in_an_epoch_under_the_limit_does_not_stop_the_run(toy):
    # the probe: 6 unreadable of the epoch's 384 (1.6 %, under the 2 % limit), one of them in the first batch of
    # 48 (2.1 % of the samples seen so far): the run must train both epochs
    bad = [10, 100, 150, 200, 250, 300]
    loop = _train(toy, bad)
    assert loop.step == 16
    summaries = [m for m in read_metrics(toy.run_dir) if "train/bad_samples" in m]
    assert [(m["step"], m["train/bad_samples"], m["train/samples_seen"]) for m in summaries] == [(8, 6, 384), (16, 6, 384)]


def test_bad_sample_counts_are_kept_in_the_checkpoint(toy):
    loop = _train(toy, [10, 100, 150, 200, 250, 300, 310, 320], max_steps=3)  # 8 bad: 2.08 % > 2 % at epoch end
    state = torch.load(toy.run_dir / "checkpoints" / "step_000000003.pt", weights_only=False)
    assert state["loop"]["bad"]["seen"] == 144 and [k for k, _ in state["loop"]["bad"]["bad"]] == [
        "clip_010.mp4", "clip_100.mp4"]
    assert loop.bad.state_dict() == state["loop"]["bad"]
    # resumed at sample 144, the epoch's count goes on from the checkpoint's 2: the 8th bad file of the epoch
    # exceeds 2 % of 384 (7.68) and stops the run, naming the files (counted from 0 it would see only 6)
    with pytest.raises(TooManyBadSamples, match=r"8 unreadable samples in an epoch of 384 .*clip_010.mp4"):
        _train(toy, [10, 100, 150, 200, 250, 300, 310, 320])


# -- 9. file modes and stale temp files -----------------------------------------------------------------
def test_run_files_are_readable_by_the_group_and_stale_temps_go(toy):
    toy.run_dir.joinpath("checkpoints").mkdir(parents=True)
    stale = [toy.run_dir / ".results.json.abcd1234.tmp", toy.run_dir / "checkpoints" / ".step_000000004.pt.k2j4h5g6.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    old = os.umask(0o002)
    try:
        ctx = start_run(toy())
        ctx.save(1, {})
        ctx.write_results({"top1": 1.0})
        ctx.close()
    finally:
        os.umask(old)
    assert not any(p.exists() for p in stale)
    for name in ("config.yaml", "env.json", "results.json", "checkpoints/step_000000001.pt", "checkpoints/last.txt"):
        assert (toy.run_dir / name).stat().st_mode & 0o777 == 0o664, name

"""Progress off a terminal (issue 22): plain lines in log.txt every log_every steps, perf/eta_s in
metrics.jsonl, the ETA on the loop's training clock, resume, and one ETA across a pipeline's phases."""
import io
import math
import re
import sys
from types import SimpleNamespace

import pytest
import torch

from shared.config import Config
from shared.logging import Progress, duration, progress_line, read_metrics
from shared.loop import Loop
from shared.run import start_run

LINE = re.compile(r"step (\d+)/(\d+) \([\d.]+ %\) \| (\S+) steps/s \| eta (\S+) \| train (\S+)")
SECONDS_PER_STEP = 0.5


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.fixture
def fake_clock(monkeypatch):
    """The loop's perf_counter, moved on by the test: every step takes SECONDS_PER_STEP."""
    now = [100.0]
    monkeypatch.setattr("shared.loop.time", SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def _run(tmp_path, name, steps=12, log_every=3, stop_after=None, clock=None, **train):
    cfg = Config({"run": {"project": "progress", "name": name, "root": str(tmp_path), "seed": 0, "device": "cpu",
                          "deterministic": False, "resume": "auto", "keep_checkpoints": 2},
                  "train": {"log_every": log_every, "ckpt_every_steps": 0, "ckpt_every_epochs": 1, **train},
                  "data": {"max_bad_fraction": 0.0}})
    ctx = start_run(cfg)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = Loop(ctx, steps_per_epoch=steps // 2, epochs=2)
    loop.register(model=model, optimizer=opt)
    loop.resume()
    data = [torch.ones(1, 2)] * (steps // 2)
    while not loop.done:
        for x in loop.epoch_batches(data):
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if clock is not None:
                clock[0] += SECONDS_PER_STEP
            loop.end_step(loss)
            if loop.itstime(every_epochs=1):
                with loop.paused():
                    if clock is not None:
                        clock[0] += 60.0  # "evaluation": not on the training clock
            loop.checkpoint_if_due()
            if loop.step == stop_after:
                ctx.close()
                return ctx.run_dir  # a kill: no finish
    loop.finish()
    ctx.close()
    return ctx.run_dir


def _lines(run_dir):
    return [LINE.search(x).groups() for x in (run_dir / "log.txt").read_text().splitlines() if LINE.search(x)]


def test_plain_lines_every_log_every_steps_off_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    run_dir = _run(tmp_path, "plain", steps=12, log_every=3)
    lines = _lines(run_dir)
    assert [(int(s), int(t)) for s, t, *_ in lines] == [(3, 12), (6, 12), (9, 12), (12, 12)]
    for _, _, rate, eta, train in lines:
        assert float(rate) > 0 and eta != "?" and train != "?"
    assert sys.stderr.getvalue() == ""  # no bar redrawn into a log file


def test_eta_on_the_training_clock_falls_to_zero(tmp_path, monkeypatch, fake_clock):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    run_dir = _run(tmp_path, "eta", steps=12, log_every=3, clock=fake_clock)
    logged = [(m["step"], m["perf/eta_s"], m["perf/steps_per_s"]) for m in read_metrics(run_dir) if "perf/eta_s" in m]
    # 0.5 s a step; the 60 s "evaluation" after epoch 1 is not training time and does not slow the ETA
    assert logged == [(s, pytest.approx((12 - s) * SECONDS_PER_STEP), pytest.approx(2.0)) for s in (3, 6, 9, 12)]
    assert [eta for *_, eta, _ in _lines(run_dir)] == ["4s", "3s", "2s", "0s"]


def test_a_terminal_keeps_the_bar_and_gets_no_plain_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    run_dir = _run(tmp_path, "tty", steps=12, log_every=3)
    assert _lines(run_dir) == []
    assert [m["step"] for m in read_metrics(run_dir) if "perf/eta_s" in m] == [3, 6, 9, 12]
    assert "/12" in sys.stderr.getvalue()  # the tqdm bar


def test_resume_counts_from_the_resumed_step(tmp_path, monkeypatch, fake_clock):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    every = {"steps": 12, "log_every": 2, "ckpt_every_steps": 4, "ckpt_every_epochs": 0, "clock": fake_clock}
    _run(tmp_path, "resume", stop_after=6, **every)
    run_dir = _run(tmp_path, "resume", **every)
    lines = _lines(run_dir)  # log.txt holds both processes: 2, 4, 6 before the kill, then 6..12 from step 4
    assert [int(s) for s, *_ in lines] == [2, 4, 6, 6, 8, 10, 12] and {int(t) for _, t, *_ in lines} == {12}
    resumed = [m for m in read_metrics(run_dir) if "perf/eta_s" in m and m["step"] > 4]
    # the rate counts only steps this process made (not the 4 restored ones): 2 steps/s throughout
    assert [(m["step"], m["perf/eta_s"]) for m in resumed] == [
        (s, pytest.approx((12 - s) * SECONDS_PER_STEP)) for s in (6, 8, 10, 12)]
    assert [train for *_, train in lines[3:]] == ["3s", "4s", "5s", "6s"]  # training time carried over


def test_progress_rate_eta_and_skipped_work():
    now = [0.0]
    p = Progress(10, clock=lambda: now[0])
    p.skip(4)  # found done: not timed
    p.start()
    assert p.eta() is None and p.rate() is None
    now[0] += 3.0
    p.advance(3)
    assert p.rate() == pytest.approx(1.0) and p.eta() == pytest.approx(3.0) and p.fraction == pytest.approx(0.7)
    p.finish()
    assert p.eta() == 0.0 and p.fraction == 1.0


def test_one_eta_across_phases_is_monotone():
    """A patch_ranking-like pipeline: phases counted in their own units (images, steps, one eval pass) whose
    costs are the time they take; the run-wide ETA falls at every update, across the phase boundaries too,
    and a phase an earlier job finished is skipped without making the rest look free."""
    now = [0.0]
    run = Progress(100 + 20 + 10 + 30, clock=lambda: now[0])  # seconds of work per phase
    run.start()
    etas = []

    def work(part, units, seconds_per_unit, finish=True):
        for _ in range(units):
            now[0] += seconds_per_unit
            part.advance(1)
            etas.append(part.eta())
        if finish:
            part.finish()

    work(run.part(100, 50), 50, 2.0)     # rank: 50 images
    work(run.part(20, 200), 200, 0.1)    # predictor: 200 steps
    now[0] += 10.0                       # eval: one call
    run.advance(10)
    etas.append(run.eta())
    work(run.part(30, 60), 60, 0.5)      # prompts: 60 steps
    assert all(math.isfinite(e) for e in etas) and etas[-1] == 0.0
    assert all(a > b for a, b in zip(etas, etas[1:]))
    assert etas[0] == pytest.approx(158.0)

    resumed = Progress(100 + 20, clock=lambda: now[0])
    resumed.part(100, 50).skip(50)       # rank done by an earlier job
    resumed.start()
    predictor = resumed.part(20, 200)
    predictor.skip(100)                  # the predictor resumed at step 100
    work(predictor, 50, 0.1, finish=False)
    assert predictor.eta() == pytest.approx(5.0) and resumed.fraction == pytest.approx(115 / 120)


def test_line_format():
    assert progress_line("step", 1200, 5000, 3.41, "steps", 1115, "train", 352) == \
        "step 1200/5000 (24.0 %) | 3.41 steps/s | eta 18m35s | train 5m52s"
    assert progress_line("images", 30, 60, None, "images", None, "elapsed", 0, run_fraction=0.25) == \
        "images 30/60 (50.0 %) | ? images/s | run 25.0 % | eta ? | elapsed 0s"
    assert [duration(s) for s in (0.4, 59, 61, 3600 * 3 + 7 * 60, 86400 * 2 + 4 * 3600, math.inf)] == \
        ["0s", "59s", "1m01s", "3h07m", "2d04h", "?"]

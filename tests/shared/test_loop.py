"""shared.loop: cadence, the training clock, exact resume of registered state, skipped bad batches."""
import time

import pytest
import torch
from torch.utils.data import DataLoader

from shared.config import Config
from shared.data.robust import BadSample, TooManyBadSamples, collate_skipping_bad
from shared.data.sampling import ResumableSampler
from shared.logging import read_metrics
from shared.loop import Loop, itstime
from shared.run import start_run


def test_itstime_rule():
    assert [s for s in range(1, 11) if itstime(s, 3)] == [3, 6, 9]
    assert [s for s in range(1, 11) if itstime(s, 3, total=10)] == [3, 6, 9, 10]
    assert [s for s in range(1, 11) if itstime(s, 0, total=10, first=True)] == [1, 10]
    assert not any(itstime(s, None) for s in range(1, 5))


def _cfg(tmp_path, name, **train):
    return Config({"run": {"project": "looptest", "name": name, "root": str(tmp_path), "seed": 0, "device": "cpu",
                           "deterministic": False, "resume": "auto", "keep_checkpoints": 2},
                   "train": {"log_every": 1, "ckpt_every_steps": 0, "ckpt_every_epochs": 1, **train},
                   "data": {"max_bad_fraction": 0.0}})


class _Data(torch.utils.data.Dataset):
    def __init__(self, n=24, bad=()):
        g = torch.Generator().manual_seed(0)
        self.x, self.bad = torch.randn(n, 4, generator=g), set(bad)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, item):
        i, seed = item
        if i in self.bad:
            return BadSample(str(i), "unreadable")
        noise = torch.randn(4, generator=torch.Generator().manual_seed(seed)) * 0.01
        return {"index": i, "x": self.x[i] + noise}


def _train(tmp_path, name, epochs=3, stop_after=None, bad=(), max_bad=0.0, **train):
    cfg = _cfg(tmp_path, name, **train)
    cfg.data.max_bad_fraction = max_bad
    ctx = start_run(cfg)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ds = _Data(bad=bad)
    sampler = ResumableSampler(len(ds), seed=0, shuffle=True, drop_last=True)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate_skipping_bad)
    loop = Loop(ctx, steps_per_epoch=len(sampler) // 4, epochs=epochs, samples_per_step=4)
    loop.register(model=model, optimizer=opt)
    loop.vars.setdefault("evals", 0)
    loop.resume()
    while not loop.done:
        sampler.set_epoch(loop.epoch, start=loop.pos * 4)
        for batch in loop.epoch_batches(loader):
            # an extra random draw per step: exact resume needs the torch RNG restored too
            loss = (model(batch["x"]).squeeze(-1) - torch.rand(())).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loop.end_step(loss)
            if loop.itstime(every_epochs=1):
                with loop.paused():
                    time.sleep(0.05)  # "evaluation": not training time
                    loop.vars["evals"] += 1
            loop.checkpoint_if_due()
            if stop_after is not None and loop.step == stop_after:
                ctx.close()
                return loop  # a "kill": nothing after the last checkpoint is kept
    loop.finish()
    ctx.close()
    return loop


def _losses(run_dir):
    return [(m["step"], m["train/loss"]) for m in read_metrics(run_dir) if "train/loss" in m]


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(tmp_path):
    ref = _train(tmp_path, "straight")
    assert ref.step == 18 and ref.epoch == 3 and ref.vars["evals"] == 3
    ref_losses = _losses(tmp_path / "looptest" / "straight")
    assert [s for s, _ in ref_losses] == list(range(1, 19))
    # checkpoints every 4 steps; stop at step 10 (last checkpoint: 8, mid-epoch 2) then rerun the command
    _train(tmp_path, "killed", ckpt_every_steps=4, stop_after=10)
    again = _train(tmp_path, "killed", ckpt_every_steps=4)
    assert again.resumed and again.vars["evals"] == 3
    assert _losses(tmp_path / "looptest" / "killed") == ref_losses  # steps 9-10 logged once, bit-identical
    for a, b in zip(ref.state_dict()["model"].values(), again.state_dict()["model"].values()):
        assert torch.equal(a, b)


def test_clock_excludes_paused_time(tmp_path):
    loop = _train(tmp_path, "clock", epochs=1)
    logged = [m["budget/train_time_s"] for m in read_metrics(tmp_path / "looptest" / "clock")
              if "budget/train_time_s" in m]
    assert logged == sorted(logged) and logged[-1] == pytest.approx(loop.clock.read())
    before = loop.clock.read()
    loop.clock.start()
    time.sleep(0.05)
    with loop.paused():
        time.sleep(0.3)
        assert not loop.clock.running
    assert loop.clock.running
    loop.clock.stop()
    assert 0.05 <= loop.clock.read() - before < 0.3


def test_cadence_of_checkpoints(tmp_path):
    _train(tmp_path, "ckpt", epochs=2, ckpt_every_steps=4)
    files = sorted(p.name for p in (tmp_path / "looptest" / "ckpt" / "checkpoints").glob("step_*.pt"))
    assert files == ["step_000000008.pt", "step_000000012.pt"]  # keep 2 of 4, 6 (epoch), 8, 12 (epoch + last)


def test_unreadable_batches_are_skipped_and_counted_per_epoch(tmp_path):
    # 1 of 24 samples unreadable: 4.2 % of an epoch; a 5 % limit lets the run go on, counted
    loop = _train(tmp_path, "bad", epochs=2, bad={5}, max_bad=0.05)
    assert loop.done and loop.epoch == 2
    summaries = [m for m in read_metrics(tmp_path / "looptest" / "bad") if "train/bad_samples" in m]
    assert [m["train/bad_samples"] for m in summaries] == [1, 1]
    with pytest.raises(TooManyBadSamples, match="in an epoch of 24"):
        _train(tmp_path, "bad_stop", epochs=2, bad={5, 6}, max_bad=0.05)


def test_register_rejects_objects_without_state():
    class Ctx:
        cfg = Config({"run": {"project": "p", "name": "n", "seed": 0}, "train": {}})
        device = torch.device("cpu")

        def nonfinite_guard(self):
            return None

    loop = Loop(Ctx(), steps_per_epoch=2, epochs=1)
    with pytest.raises(TypeError, match="state_dict"):
        loop.register(thing=object())
    with pytest.raises(ValueError, match="taken"):
        loop.register(loop=torch.nn.Linear(1, 1))

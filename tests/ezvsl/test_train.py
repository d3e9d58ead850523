import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from shared.checkpoint import CheckpointManager
from shared.logging import read_metrics
from shared.run import NonFiniteLossError
from projects.ezvsl import train as train_mod
from tests.ezvsl.conftest import tiny_cfg, tiny_overrides


def losses(run_dir):
    return [(m["step"], m["train/loss"]) for m in read_metrics(run_dir) if "train/loss" in m]


@pytest.mark.slow
def test_tiny_run_writes_everything(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path, "run.name=tiny", "train.ckpt_every_steps=4")
    results = train_mod.main(cfg)
    run = tmp_path / "ezvsl" / "tiny"
    for f in ("config.yaml", "env.json", "metrics.jsonl", "results.json", "checkpoints/best.pt",
              "viz/demo_test_heatmaps.png"):
        assert (run / f).exists(), f
    assert list((run / "tb").iterdir())
    assert set(results["sets"]) == {"demo_test", "demo_test_vggss"}
    m = results["sets"]["demo_test"]
    assert {"av", "obj", "av_obj"} <= set(m) and 0 <= m["av"]["ciou_ap50"] <= 1 and m["n"] == 8
    assert json.loads((run / "results.json").read_text())["sets"]["demo_test"]["av"] == m["av"]
    assert [s for s, _ in losses(run)] == list(range(1, 9))
    # running the same command again resumes the finished run: no step is trained twice
    train_mod.main(cfg)
    assert [s for s, _ in losses(run)] == list(range(1, 9))


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_losses(tiny_root, tmp_path):
    # 2 epochs of 4 steps, a checkpoint every 3: killed after step 3 or 6, so the resume starts mid-epoch
    over = ["optim.epochs=2", "eval.selection=last", "eval.test_sets=[demo_test]", "eval.n_visualizations=0",
            "train.ckpt_every_steps=3"]
    ref_cfg = tiny_cfg(tiny_root, tmp_path, "run.name=straight", *over)
    train_mod.main(ref_cfg)
    ref = losses(tmp_path / "ezvsl" / "straight")
    assert len(ref) == 8

    run = tmp_path / "ezvsl" / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "projects.ezvsl.train", "--config",
                             "projects/ezvsl/configs/demo.yaml", *tiny_overrides(tiny_root, tmp_path, "run.name=killed", *over)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = CheckpointManager(run)
    deadline = time.time() + 240
    while time.time() < deadline:
        p = ckpts.latest_path()
        if p is not None and int(p.stem.split("_")[1]) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(ckpts.latest_path().stem.split("_")[1])
    assert 3 <= killed_at < 8
    train_mod.main(tiny_cfg(tiny_root, tmp_path, "run.name=killed", *over))
    got = losses(run)
    assert [s for s, _ in got] == list(range(1, 9))
    assert got == ref  # bit-identical on CPU


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train_mod.mil_contrastive_loss

    def poisoned(*a, **k):
        calls["n"] += 1
        loss, maps = real(*a, **k)
        return (loss * float("nan") if calls["n"] == 3 else loss), maps

    monkeypatch.setattr(train_mod, "mil_contrastive_loss", poisoned)
    # logged every 10 steps: the guard still names step 3, and stops before the step-4 checkpoint
    cfg = tiny_cfg(tiny_root, tmp_path, "run.name=nan", "train.log_every=10")
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        train_mod.main(cfg)
    state = CheckpointManager(tmp_path / "ezvsl" / "nan").load_latest()
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_too_many_unreadable_files_stop_the_run(tiny_root, tmp_path):
    import shutil

    from shared.data.robust import TooManyBadSamples

    root = tmp_path / "copy"
    shutil.copytree(tiny_root, root)
    for i in range(4):
        (root / "train" / "audio" / f"train{i:05d}.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(TooManyBadSamples, match="unreadable"):
        train_mod.main(tiny_cfg(root, tmp_path, "run.name=bad", "data.max_bad_fraction=0.05"))
    # tolerated below the fraction: counted in the metrics, never replaced
    res = train_mod.main(tiny_cfg(root, tmp_path, "run.name=bad_ok", "data.max_bad_fraction=0.5",
                                  "optim.epochs=1", "eval.selection=last", "eval.test_sets=[demo_test]",
                                  "eval.n_visualizations=0", "train.ckpt_every_steps=0"))
    assert res["sets"]
    bad = [m for m in read_metrics(tmp_path / "ezvsl" / "bad_ok") if "train/bad_samples" in m]
    assert bad and bad[0]["train/bad_samples"] == 4


def test_eval_cli_loads_our_and_official_checkpoints(tiny_root, tmp_path):
    from projects.ezvsl import eval as eval_mod
    from projects.ezvsl.model import EZVSL

    cfg_args = ["--config", "projects/ezvsl/configs/demo.yaml", f"data.root={tiny_root}", f"run.root={tmp_path}",
                "run.name=ev", "data.num_workers=0", "data.image_size=64", "data.audio.duration=0.5",
                "model.image_weights=null", "model.ogl_weights=null", "eval.n_visualizations=0",
                "eval.test_sets=[demo_test]"]
    torch.manual_seed(0)
    model = EZVSL()
    # an official release file: weights under 'model', DDP 'module.' prefixes
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 20}, tmp_path / "best.pth")
    res = eval_mod.main(cfg_args + [f"eval.checkpoint={tmp_path}/best.pth"])
    assert res["checkpoint"].endswith("best.pth") and res["sets"]["demo_test"]["n"] == 8
    assert (tmp_path / "ezvsl" / "ev" / "eval_results.json").exists()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        eval_mod.main(cfg_args + ["eval.checkpoint=last"])


@pytest.mark.dist
def test_torchrun_two_processes(tiny_root, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    args = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "projects.ezvsl.train", "--config",
            "projects/ezvsl/configs/demo.yaml", f"data.root={tiny_root}", f"run.root={tmp_path}", "run.name=ddp",
            "data.num_workers=0", "data.image_size=64", "data.audio.duration=0.5", "model.image_weights=null",
            "model.ogl_weights=null", "optim.batch_size=8", "optim.epochs=1", "train.log_every=1",
            "eval.n_visualizations=0", "eval.test_sets=[demo_test]", "loss.gather_negatives=true"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "ezvsl" / "ddp"
    env = json.loads((run / "env.json").read_text())
    assert env["world_size"] == 2 and env["dist_source"] == "torchrun"
    # 32 pairs, global batch 8 = 4 per process: 4 steps, logged once each (rank 0 only)
    assert [s for s, _ in losses(run)] == [1, 2, 3, 4]
    assert json.loads((run / "results.json").read_text())["sets"]["demo_test"]["n"] == 8

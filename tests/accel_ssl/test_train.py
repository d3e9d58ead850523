import json

import pytest

from shared.logging import read_metrics
from projects.accel_ssl import train as train_mod
from tests.accel_ssl.conftest import tiny_cfg

SCHED = "[{until: 0.5, keep_online: 0.5}, {until: 1.0}]"


def losses(run):
    return [(m["step"], m["train/loss"]) for m in read_metrics(run) if "train/loss" in m]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mocov3", "dino"])
def test_resume_mid_run_reproduces_the_uninterrupted_run(method, fmnist_root, tmp_path):
    over = [f"compression.schedule={SCHED}"]
    ref = train_mod.main(tiny_cfg(method, fmnist_root, tmp_path, "run.name=straight", *over))
    assert ref["steps"] == 8 and 0 <= ref["knn_top1"] <= 1
    straight = losses(tmp_path / "accel_ssl" / "straight")
    # stop after 5 steps (mid-epoch, after the step-3 checkpoint... and the one at the stop), then rerun
    train_mod.main(tiny_cfg(method, fmnist_root, tmp_path, "run.name=split", "train.max_steps=5", *over))
    res = train_mod.main(tiny_cfg(method, fmnist_root, tmp_path, "run.name=split", *over))
    assert losses(tmp_path / "accel_ssl" / "split") == straight
    assert res["knn_top1"] == ref["knn_top1"]
    keep = [m["train/keep_online"] for m in read_metrics(tmp_path / "accel_ssl" / "split") if "train/keep_online" in m]
    assert keep == [0.5] * 4 + [1.0] * 4  # the schedule switched half-way
    saved = json.loads((tmp_path / "accel_ssl" / "split" / "results.json").read_text())
    assert saved["train_tflops"] == pytest.approx(ref["train_tflops"])


@pytest.mark.dist
def test_torchrun_two_processes(fmnist_root, tmp_path):
    import os
    import subprocess
    import sys

    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    args = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "projects.accel_ssl.train", "--config",
            "projects/accel_ssl/configs/demo_mocov3.yaml", f"data.root={fmnist_root}", f"run.root={tmp_path}",
            "run.name=ddp", "data.num_workers=0", "data.train_subset=64", "model.arch=vit_test", "method.hidden_dim=32",
            "method.out_dim=16", "optim.batch_size=16", "optim.epochs=1", "train.log_every=1",
            "eval.knn_train_size=100", "eval.knn_test_size=40", f"compression.schedule={SCHED}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "accel_ssl" / "ddp"
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    assert [s for s, _ in losses(run)] == [1, 2, 3, 4]
    assert json.loads((run / "results.json").read_text())["steps"] == 4


def test_periodic_knn_is_logged_with_training_time_and_time_to_target(fmnist_root, tmp_path):
    from projects.accel_ssl.reproduce import curve, time_to

    cfg = tiny_cfg("simclr", fmnist_root, tmp_path, "run.name=every", "eval.every_steps=3")
    res = train_mod.main(cfg)
    evals = [m for m in read_metrics(tmp_path / "accel_ssl" / "every") if "eval/knn_top1" in m and "budget/train_time_s" in m]
    assert [m["step"] for m in evals] == [3, 6]
    times = [m["budget/train_time_s"] for m in evals]
    assert 0 < times[0] < times[1] < res["train_time_s"]
    pts = curve(cfg, res)
    assert len(pts) == 3 and pts[-1] == (res["train_time_s"], res["train_tflops"], res["knn_top1"])
    assert time_to([(1.0, 2.0, 0.5), (3.0, 4.0, 0.8), (5.0, 6.0, 0.7)], 0.75) == (3.0, 4.0)
    assert time_to([(1.0, 2.0, 0.5)], 0.9) is None

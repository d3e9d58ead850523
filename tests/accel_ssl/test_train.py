import json

import pytest

from shared.logging import read_metrics
from projects.accel_ssl import train as train_mod
from tests.accel_ssl.conftest import tiny_cfg

SCHED = "[{until: 0.5, keep_online: 0.5}, {until: 1.0}]"


def losses(run):
    return [(m["step"], m["train/loss"]) for m in read_metrics(run) if "train/loss" in m]


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

import json

import pytest

import torch

from shared.checkpoint import CheckpointManager
from projects.accel_ssl import reproduce
from projects.accel_ssl.compression import Setting
from projects.accel_ssl.model import build_model
from tests.accel_ssl.conftest import tiny_cfg
from tests.accel_ssl.test_frameworks import batch


def fixed_batch_loss(cfg, views, state) -> float:
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg)
    if state is not None:
        model.load_state_dict(state)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    with torch.no_grad():
        return float(model.loss(views, Setting(), gens)[0])


def test_time_to_target_is_measured_the_same_way_for_both_runs():
    # (time, TFLOPs, k-NN): the full run passes 0.70 at 20 s, the accelerated one at 5 s
    full = [(0.0, 0.0, 0.5), (10.0, 10.0, 0.6), (20.0, 20.0, 0.72), (40.0, 40.0, 0.71), (50.0, 50.0, 0.73)]
    accel = [(0.0, 0.0, 0.5), (5.0, 1.0, 0.70), (10.0, 2.0, 0.69), (25.0, 30.0, 0.735)]
    rows = reproduce.speedups(full, accel, full_final=0.73, offsets=(0.0, 0.03, 0.2))
    assert rows[0]["full_time_s"] == 50.0 and rows[0]["accel_time_s"] == 25.0 and rows[0]["speedup_time"] == 2.0
    assert rows[0]["speedup_flops"] == pytest.approx(50 / 30)
    assert rows[1]["full_time_s"] == 20.0 and rows[1]["accel_time_s"] == 5.0 and rows[1]["speedup_time"] == 4.0
    assert rows[1]["speedup_flops"] == 20.0
    assert (rows[2]["full_time_s"], rows[2]["accel_time_s"], rows[2]["speedup_flops"]) == (10.0, 5.0, 10.0)
    never = reproduce.speedups(full, [(0.0, 0.0, 0.5), (9.0, 9.0, 0.6)], full_final=0.73, offsets=(0.0,))
    assert never[0]["accel_time_s"] is None and never[0]["speedup_time"] is None


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_demo_end_to_end_learns_and_reports(fmnist_root, tmp_path):
    over = [f"data.root={fmnist_root}", f"run.root={tmp_path}", "data.num_workers=0", "data.train_subset=64",
            "model.arch=vit_test", "method.hidden_dim=32", "method.out_dim=16", "optim.batch_size=16", "optim.epochs=2",
            "train.log_every=1", "train.ckpt_every_steps=0", "eval.knn_train_size=200", "eval.knn_test_size=80",
            "eval.batch_size=100", "eval.every_steps=4", "optim.base_lr=0.02", "optim.warmup_epochs=0.5"]
    out = reproduce.main(["--methods", "simclr", "--figure", str(tmp_path / "fig.png"), *over])
    r = out["rows"]["simclr"][0]
    assert r["full"]["steps"] == 8 and r["accel"]["steps"] == 16
    # both curves start at the random-init network and are on the same step cadence (every 4 steps)
    assert r["full_curve"][0] == (0.0, 0.0, r["random_init_knn"]) == r["accel_curve"][0]
    assert len(r["full_curve"]) == 1 + 1 + 1 and len(r["accel_curve"]) == 1 + 3 + 1
    times = [t for t, _, _ in r["accel_curve"]]
    assert times == sorted(times) and times[-1] == r["accel"]["train_time_s"]
    # the full run reaches its own final accuracy at the latest at its end
    assert r["targets"][0]["full_time_s"] <= r["full"]["train_time_s"]
    # the accelerated run's first stage is cheaper per step (patch 8: a quarter of the tokens)
    assert r["accel"]["train_tflops"] < 2 * r["full"]["train_tflops"]
    # learned something measurable (k-NN saturates on this synthetic set): the loss on one fixed batch with
    # fixed augmentations and token draws falls from random init to the end of the full-length run
    cfg = tiny_cfg("simclr", fmnist_root, tmp_path, *over[3:])
    views = batch(cfg, 16)
    before = fixed_batch_loss(cfg, views, None)
    after = fixed_batch_loss(cfg, views, CheckpointManager(tmp_path / "accel_ssl" / "demo_simclr_full").load_latest()["model"])
    assert after < before - 0.2, (before, after)
    assert r["full"]["knn_top1"] > 0.3  # chance: 0.1
    assert 0.0 < out["raw_pixel_knn"] <= 1.0
    assert (tmp_path / "fig.png").stat().st_size > 0
    assert "simclr" in (tmp_path / "accel_ssl" / "demo_table.md").read_text()
    assert json.loads((tmp_path / "accel_ssl" / "demo_results.json").read_text())["rows"]["simclr"]["0"]
    merged = reproduce.main(["--merge", str(tmp_path / "accel_ssl" / "demo_results_simclr_s0.json"), "--figure", "",
                             f"run.root={tmp_path}"])
    assert merged["rows"]["simclr"][0]["targets"] == r["targets"]
    # a run stopped early (no results.json) is read up to its last periodic evaluation
    (tmp_path / "accel_ssl" / "demo_simclr_accel" / "results.json").unlink()
    partial = reproduce.main(["--methods", "simclr", "--collect", "--figure", "", *over])["rows"]["simclr"][0]
    assert partial["accel"]["partial"] and partial["accel"]["steps"] == 12
    assert partial["accel_curve"] == r["accel_curve"][:-1] and partial["full_curve"] == r["full_curve"]


def _pair(init, full_knn, accel_knn, st, sf):
    return {"random_init_knn": init, "full": {"knn_top1": full_knn, "train_time_s": 100.0, "train_tflops": 10.0},
            "accel": {"knn_top1": accel_knn, "train_time_s": 120.0, "train_tflops": 11.0},
            "targets": [{"speedup_time": t, "speedup_flops": f} for t, f in zip(st, sf)]}


def test_demo_results_rows_mean_std_over_seeds_and_partial_table_not_written(tmp_path):
    from shared.config import load_config
    from shared.report import read_results

    rows = {m: {0: _pair(0.5, 0.70, 0.73, [2.0, 3.0, None, 1.0], [4.0, 5.0, None, 2.0]),
                1: _pair(0.6, 0.72, 0.71, [4.0, 1.0, 2.0, 1.0], [6.0, 3.0, 4.0, 2.0])} for m in ("mocov3", "simclr")}
    data, notes = reproduce.result_rows(rows, raw_knn=0.816)
    get = {(r["setting"], r["method"], r["metric"]): r for r in data}
    knn = get[("MoCo v3", "full length", "k-NN top-1 (%)")]
    assert knn["ours"] == pytest.approx(71.0) and knn["std"] == pytest.approx(1.414, abs=0.01)  # sample std
    assert get[("MoCo v3", "raw pixels", "k-NN top-1 (%)")]["ours"] == pytest.approx(81.6)
    sp = get[("SimCLR", "speed-up to full - 0 pt", "speed-up: train time (x)")]
    assert sp["ours"] == pytest.approx(3.0) and sp["std"] == pytest.approx(1.414, abs=0.01)
    # a target one seed did not reach: the mean of the seeds that did, and the table says so
    miss = get[("SimCLR", "speed-up to full - 2 pt", "speed-up: FLOPs (x)")]
    assert miss["ours"] == 4.0 and miss["std"] is None and miss["note"] == "reached by 1 of 2 seeds"
    assert "time 2.00x / 4.00x" in notes and "not reached" in notes
    # results/demo.json is written only from a table with all three frameworks
    (tmp_path / "projects" / "accel_ssl").mkdir(parents=True)
    cfg = load_config("projects/accel_ssl/configs/demo_mocov3.yaml")
    assert reproduce.write_demo_results(rows, 0.816, cfg, None, root=tmp_path) is None
    rows["dino"] = {0: rows["simclr"][0]}
    path = reproduce.write_demo_results(rows, 0.816, cfg, None, root=tmp_path)
    (table,) = read_results("accel_ssl", tmp_path)
    assert path.name == "demo.json" and table["table"] == "demo" and "DINO 1" in table["scale"]
    assert len(table["rows"]) == len(data) + len(data) // 2

"""PTNL runs end to end on a synthetic CoOp-layout dataset with a random-init tiny CLIP: every method,
the schedule, resume, and the sweep's jobs and gathered table."""
import json
import math

import pytest
import torch

from shared.config import load_config
from projects.ptnl import sweep
from projects.ptnl.train import lr_at_epoch, main
from tests.ptnl.conftest import tiny_cfg


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_official_schedule():
    cfg = load_config("projects/ptnl/configs/base.yaml")
    assert lr_at_epoch(0, cfg) == 1e-5                     # one constant warm-up epoch
    assert lr_at_epoch(1, cfg) == pytest.approx(0.002)     # cosine restarted after the warm-up
    assert lr_at_epoch(26, cfg) == pytest.approx(0.001)
    assert lr_at_epoch(49, cfg) == pytest.approx(0.001 * (1 + math.cos(math.pi * 48 / 50)))
    assert (cfg.optim.batch_size, cfg.optim.epochs, cfg.prompt.n_ctx, cfg.loss.q) == (32, 50, 16, 0.7)


def test_coop_run_writes_results_and_resumes(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, tmp_path, "run.name=coop", "fewshot.noise_rate=0.5", "loss.name=gce",
                   "fewshot.fp_replacement=false")
    res = main(cfg)
    run = tmp_path / "ptnl" / "coop"
    for f in ("config.yaml", "env.json", "metrics.jsonl", "results.json", "test_logits.pt", "checkpoints/last.txt"):
        assert (run / f).exists(), f
    assert res["train_set"] == {"n": 20, "noise_rate": 0.5, "wrong": 10, "per_class_min": 4, "per_class_max": 4,
                                "classes_present": 5}
    assert res["train_steps"] == 2 * 2 and res["test"]["n"] == 20 and 0 <= res["test"]["accuracy"] <= 100
    logits = torch.load(run / "test_logits.pt")["logits"]
    assert logits.shape == (20, 5)
    # the finished run is not trained again; without results.json it resumes from its last checkpoint
    assert main(cfg)["test"] == res["test"]
    (run / "results.json").unlink()
    again = main(cfg)
    assert again["train_steps"] == 4 and again["test"]["accuracy"] == res["test"]["accuracy"]


@pytest.mark.parametrize("method", ["upl", "robust_upl", "zeroshot", "linear_probe"])
def test_other_methods(synth_root, tmp_path, method):
    extra = ["fewshot.noise_type=confusion", "fewshot.noise_rate=0.25"] if method == "linear_probe" else []
    res = main(tiny_cfg(synth_root, tmp_path, f"run.name={method}", f"method={method}", *extra,
                        arch="tiny-clip-rn" if method == "upl" else "tiny-clip-vit"))
    assert 0 <= res["test"]["accuracy"] <= 100 and res["test"]["n"] == 20
    if method in ("upl", "robust_upl"):
        assert 0 < res["train_set"]["n"] <= 5 * 4
        assert list((tmp_path / "ptnl" / "_zeroshot").glob("Synth_*.pt"))  # the cached "get info" pass
    if method == "linear_probe":
        assert res["train_set"]["noise_rate"] > 0 and res["test"]["C"] == 1000.0


def test_missing_dataset_is_a_clear_error(tmp_path):
    cfg = load_config("projects/ptnl/configs/dtd.yaml", [f"data.root={tmp_path}", f"run.root={tmp_path}",
                                                         "clip.pretrained=null"])
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "dtd")):
        main(cfg)


def test_sweep_runs_a_grid_and_gathers_one_table(synth_root, tmp_path, monkeypatch):
    grid = {"name": "t", "datasets": ["demo"], "grids": [
        {"fixed": {"method": "coop"}, "axes": {"fewshot.noise_rate": [0.0, 0.5], "run.seed": [1, 2]}}]}
    gfile = tmp_path / "g.yaml"
    gfile.write_text(json.dumps(grid))
    overrides = [f"data.root={synth_root}", "data.dataset=Synth", "data.dataset_dir=synth", "data.image_dir=images",
                 "data.split_file=split_zhou_Synth.json", f"run.root={tmp_path}", "clip.arch=tiny-clip-vit",
                 "clip.pretrained=null", "fewshot.shots=4", "optim.epochs=1", "optim.batch_size=8"]
    jobs = sweep.main(["--grid", str(gfile), "--dry-run", *overrides])
    assert [j["name"] for j in jobs] == [f"Synth_coop_random{r}_ce_tiny-clip-vit_seed{s}"
                                        for r in (0, 0.5) for s in (1, 2)]
    sweep.main(["--grid", str(gfile), "--cluster", "none", *overrides])
    rows = sweep.main(["--grid", str(gfile), "--gather", *overrides])
    assert [(r["noise_rate"], r["seeds"]) for r in rows] == [(0.0, 2), (0.5, 2)]
    assert all("ensemble" in r and 0 <= r["mean"] <= 100 for r in rows)
    assert rows[1]["train_noise"] == pytest.approx(0.5, abs=0.15)
    table = (tmp_path / "ptnl" / "sweeps" / "t" / "results.md").read_text()
    assert "| Synth | coop | tiny-clip-vit | random | 50% | ce | 2 |" in table


def test_sweep_submits_through_submitit(synth_root, tmp_path):
    gfile = tmp_path / "g.yaml"
    gfile.write_text(json.dumps({"name": "dbg", "datasets": ["demo"],
                                 "grids": [{"fixed": {"method": "zeroshot"}, "axes": {"run.seed": [1]}}]}))
    overrides = [f"data.root={synth_root}", "data.dataset=Synth", "data.dataset_dir=synth", "data.image_dir=images",
                 "data.split_file=split_zhou_Synth.json", f"run.root={tmp_path}", "clip.arch=tiny-clip-vit",
                 "clip.pretrained=null"]
    (res,) = sweep.main(["--grid", str(gfile), "--cluster", "debug", *overrides])  # submitit's in-process executor
    assert res["method"] == "zeroshot"
    assert (tmp_path / "ptnl" / "Synth_zeroshot_tiny-clip-vit_seed1" / "results.json").is_file()
    assert list((tmp_path / "ptnl" / "sweeps" / "dbg" / "submitit").iterdir())
    with pytest.raises(ValueError, match="not in this grid"):
        sweep.main(["--grid", str(gfile), "--datasets", "dtd", "--dry-run", *overrides])

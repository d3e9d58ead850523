"""PTNL runs end to end on a synthetic CoOp-layout dataset with a random-init tiny CLIP: every method,
the schedule, resume, and the sweep's jobs and gathered table."""
import json
import math

import pytest
import torch

from shared.config import load_config
from shared import sweep
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
    grid = {"name": "t", "project": "ptnl", "datasets": ["demo"], "grids": [
        {"fixed": {"method": "coop"}, "axes": {"fewshot.noise_rate": [0.0, 0.5], "run.seed": [1, 2]}}]}
    gfile = tmp_path / "g.yaml"
    gfile.write_text(json.dumps(grid))
    overrides = [f"data.root={synth_root}", "data.dataset=Synth", "data.dataset_dir=synth", "data.image_dir=images",
                 "data.split_file=split_zhou_Synth.json", f"run.root={tmp_path}", "clip.arch=tiny-clip-vit",
                 "clip.pretrained=null", "fewshot.shots=4", "optim.epochs=1", "optim.batch_size=8", "optim.warmup_epochs=0"]
    jobs = sweep.main(["--grid", str(gfile), "--dry-run", *overrides])
    assert [j["name"] for j in jobs] == [f"Synth_coop_random{r}_ce_tiny-clip-vit_seed{s}"
                                        for r in (0, 0.5) for s in (1, 2)]
    sweep.main(["--grid", str(gfile), "--cluster", "none", *overrides])
    rows = sweep.main(["--grid", str(gfile), "--gather", *overrides])
    assert [(r["noise_rate"], r["seeds"]) for r in rows] == [(0.0, 2), (0.5, 2)]
    assert all("ensemble" in r and 0 <= r["mean"] <= 100 for r in rows)
    assert rows[1]["train_noise"] == pytest.approx(0.5, abs=0.15)
    table = (tmp_path / "ptnl" / "sweeps" / "t" / "results.md").read_text()
    assert "| Synth | coop | tiny-clip-vit | random | 0.5 | ce | 2 |" in table  # ptnl's sweep_settings columns


def test_sweep_submits_through_submitit(synth_root, tmp_path):
    gfile = tmp_path / "g.yaml"
    gfile.write_text(json.dumps({"name": "dbg", "project": "ptnl", "datasets": ["demo"],
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


@pytest.mark.parametrize("override, match", [
    ("fewshot.noise_rate=1.5", r"in \[0, 1\)"),
    ("fewshot.noise_rate=1.0", r"in \[0, 1\)"),
    ("fewshot.noise_rate=-0.25", r"in \[0, 1\)"),
    ("fewshot.noise_rate=0.3", "whole number"),
    ("fewshot.noise_type=symmetric", "noise_type"),
    ("fewshot.shots=0", "shots"),
    ("method=finetune", "method must be"),
    ("loss.name=mae", "loss.name"),
    ("prompt.class_token_position=start", "class_token_position"),
])
def test_bad_settings_stop_before_the_run_folder_is_made(synth_root, tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        main(tiny_cfg(synth_root, tmp_path, "run.name=bad", override))
    assert not (tmp_path / "ptnl" / "bad").exists()


def test_more_shots_than_a_class_holds_is_an_error_unless_asked(synth_root, tmp_path):
    """The synthetic classes have 12 train images: a clean pool of 6. 7 shots used to train on fewer
    distinct shots while results.json said 7."""
    with pytest.raises(ValueError, match=r"fewshot.shots=7.*at most 6"):
        main(tiny_cfg(synth_root, tmp_path, "run.name=toomany", "fewshot.shots=7"))
    assert not (tmp_path / "ptnl" / "toomany").exists()
    res = main(tiny_cfg(synth_root, tmp_path, "run.name=official", "fewshot.shots=7", "fewshot.allow_fewer_shots=true",
                        "optim.epochs=1", "eval.save_logits=false"))
    assert res["noise"]["shots"] == 7 and res["train_set"]["per_class_max"] <= 6   # what the official code does


def test_build_model_from_a_config_alone():
    """build_model(cfg): the CoOp model of a config without its data (placeholder class names for a
    CoOp dataset; the demo's own names), on a random-init CLIP when clip.pretrained is null."""
    cfg = load_config("projects/ptnl/configs/dtd.yaml", ["clip.pretrained=null", "clip.arch=tiny-clip-vit",
                                                         "prompt.n_ctx=4"])
    from projects.ptnl.model import build_model

    model = build_model(cfg)
    assert model.prompt_learner.n_cls == 47 and model.prompt_learner.ctx.shape[0] == 4
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 47) and model(x).dtype == torch.float32
    demo = build_model(load_config("projects/ptnl/configs/demo.yaml", ["clip.pretrained=null"]))
    assert demo.prompt_learner.n_cls == 10


def test_a_grid_with_a_bad_setting_fails_at_expansion(tmp_path):
    from projects.ptnl.train import run_name

    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        run_name(load_config("projects/ptnl/configs/dtd.yaml", ["fewshot.noise_rate=1.5"]))
    assert run_name(load_config("projects/ptnl/configs/dtd.yaml", ["fewshot.noise_rate=0.5", "loss.name=gce"])) == \
        "DescribableTextures_coop_random0.5_gce0.7_RN50_seed1"


def test_a_run_folder_is_not_reused_with_other_weights(synth_root, tmp_path):
    """The run folder's name gives the architecture, not the weights: the demo CLIP's cache is retrained in
    place when its recipe changes, and a finished run must not be returned for the new weights."""
    import hashlib

    from shared.clip.models import load_clip
    from shared.run import ConfigChanged

    weights = tmp_path / "clip.pt"
    torch.manual_seed(0)
    torch.save(load_clip("tiny-clip-vit", None).model.state_dict(), weights)
    cfg = tiny_cfg(synth_root, tmp_path, "run.name=zs", "method=zeroshot", f"clip.pretrained={weights}")
    first = main(cfg)
    assert first["inputs"] == {"clip.pretrained": "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert main(cfg)["inputs"] == first["inputs"]                         # same weights: reused
    torch.manual_seed(1)
    torch.save(load_clip("tiny-clip-vit", None).model.state_dict(), weights)
    with pytest.raises(ConfigChanged, match="clip.pretrained"):
        main(cfg)
    again = main(tiny_cfg(synth_root, tmp_path, "run.name=zs", "method=zeroshot", f"clip.pretrained={weights}",
                          "run.resume=never"))
    assert again["inputs"] != first["inputs"]
    assert main(cfg)["inputs"] == again["inputs"]                         # the folder now belongs to the new weights
    (tmp_path / "ptnl" / "zs" / "inputs.json").unlink()                   # a finished run from before the record
    with pytest.raises(ConfigChanged, match="unrecorded"):
        main(cfg)

import json
from pathlib import Path

import pytest
import torch

from shared.config import ConfigError, config_diff, load_config
from shared.logging import read_metrics
from projects.latent_mim.optim import build_optimizer
from projects.latent_mim.model import build_model
from projects.latent_mim.train import Schedules, main, train_step

CONFIGS = Path("projects/latent_mim/configs")
FAILURE_MODES = {"fail_joint": {"model.target"}, "fail_regression": {"loss.name"}, "fail_no_gap": {"model.patch_gap"},
                 "fail_all_targets": {"model.mask_target"}, "fail_no_cues": {"model.visual_cues"},
                 "mae_vitb16_in100": {"model.method", "model.patch_gap"}}
FAST_EVAL = ("eval.nn_val=false", "eval.knn=false")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(FAILURE_MODES))
def test_each_failure_mode_is_a_small_change_and_trains_a_step(cfg_factory, name):
    default = load_config(CONFIGS / "in100_vitb16_300ep.yaml").to_dict()
    variant = load_config(CONFIGS / f"{name}.yaml").to_dict()
    diff = {line.split(":")[0] for line in config_diff(default, variant)} - {"run.name"}
    assert diff == FAILURE_MODES[name]
    overrides = []
    for key in diff:
        section, leaf = key.split(".")
        value = variant[section][leaf]
        if key == "model.patch_gap" and value:
            value = 1
        overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else str(value).lower()}")
    cfg = cfg_factory(*overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.optim)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    x = torch.randn(cfg.optim.batch_size * cfg.optim.accum_iter, 1, model.train_crop, model.train_crop)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    vals = Schedules(cfg, 4, 1).at(0)
    loss, metrics = train_step(model, model, opt, scaler, x, vals, cfg, 0, torch.device("cpu"))
    assert torch.isfinite(loss) and "train/avg_sim_vis" in metrics
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert "encoder.blocks.0.attn.qkv.weight" in moved


def losses_of(run_dir):
    return {m["step"]: m["train/loss"] for m in read_metrics(run_dir) if "train/loss" in m}


@pytest.mark.timeout(180)
def test_resume_mid_run_reproduces_the_uninterrupted_run(cfg_factory, tmp_path):
    full = main(cfg_factory("run.name=full", *FAST_EVAL))
    assert full["steps"] == 8
    part = main(cfg_factory("run.name=cut", "train.max_steps=3", *FAST_EVAL))
    assert part["steps"] == 3
    resumed = main(cfg_factory("run.name=cut", *FAST_EVAL))  # train.max_steps is a changeable key
    assert resumed["steps"] == 8
    a, b = losses_of(tmp_path / "runs/latent_mim/full"), losses_of(tmp_path / "runs/latent_mim/cut")
    assert sorted(a) == list(range(1, 9)) and a == b
    sa = torch.load(sorted((tmp_path / "runs/latent_mim/full/checkpoints").glob("step_*.pt"))[-1], weights_only=False)
    sb = torch.load(sorted((tmp_path / "runs/latent_mim/cut/checkpoints").glob("step_*.pt"))[-1], weights_only=False)
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k  # online, target (EMA) and decoder weights identical
    # the same command again: reported complete, nothing evaluated or logged twice
    lines = (tmp_path / "runs/latent_mim/cut/metrics.jsonl").read_text()
    assert main(cfg_factory("run.name=cut", *FAST_EVAL)) == resumed
    assert (tmp_path / "runs/latent_mim/cut/metrics.jsonl").read_text() == lines


@pytest.mark.timeout(60)
def test_bad_config_and_data_are_clear_errors(cfg_factory, tmp_path):
    with pytest.raises(ConfigError, match="num_vis"):
        cfg_factory("model.num_viz=3")
    with pytest.raises(ValueError, match="in_chans=1"):
        main(cfg_factory("model.in_chans=3", "run.name=bad_chans"))
    with pytest.raises(FileNotFoundError, match="ImageNet"):
        main(cfg_factory("data.dataset=imagenet", "model.in_chans=3", f"data.root={tmp_path}/none", "run.name=bad_root"))
    with pytest.raises(ValueError, match="fewer than one step"):
        main(cfg_factory("data.train_subset=10", "run.name=tiny"))

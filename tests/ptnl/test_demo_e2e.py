"""The demo pipeline end to end at a smoke profile (`python -m projects.ptnl.reproduce` runs the full
demo): Fashion-MNIST in CoOp's layout with every image dark, the demo CLIP's "looks" variant at the
smoke recipe (``tests/conftest.py``: trained once per test run, reused here through reproduce's
cache check), then zero-shot, CoOp with CE (2 seeds: the ensemble) and GCE, the linear probe at noise
0/50 %, UPL and robust UPL, the table and the headline figure, and what this profile can show: the
CLIP learned from captions, the probe learns the task and loses accuracy to label noise, prompt
tuning learns the task. The paper's comparison at demo scale (prompt tuning above zero-shot on clean
shots, GCE above the probe at 50 % noise) needs the full demo CLIP: `make reproduce-ptnl`, its
README table and results/demo.json."""
import json

import pytest
import torch

from projects.ptnl import reproduce
from tests.conftest import DEMO_CLIP_SMOKE


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_demo_pipeline_end_to_end(tmp_path, demo_clip_smoke):
    grid = {"name": "demo_small", "project": "ptnl", "datasets": ["demo"], "overrides": ["optim.epochs=5"], "grids": [
        {"fixed": {"method": "zeroshot"}, "axes": {"run.seed": [1]}},
        {"fixed": {"method": "coop", "loss.name": "ce", "optim.epochs": 10},
         "axes": {"fewshot.noise_rate": [0.0], "run.seed": [1, 2]}},
        {"fixed": {"method": "coop", "loss.name": "gce"}, "axes": {"fewshot.noise_rate": [0.5], "run.seed": [1]}},
        {"fixed": {"method": "linear_probe"}, "axes": {"fewshot.noise_rate": [0.0, 0.5], "run.seed": [1]}},
        {"fixed": {"method": "upl", "loss.name": "ce"}, "axes": {"run.seed": [1]}},
        {"fixed": {"method": "robust_upl", "loss.name": "gce"}, "axes": {"run.seed": [1]}}]}
    gfile = tmp_path / "grid.yaml"
    gfile.write_text(json.dumps(grid))
    recipe = [x for k, v in DEMO_CLIP_SMOKE.items() for x in ("--clip-recipe", f"{k}={json.dumps(v)}")]
    threads = torch.get_num_threads()
    try:
        out = reproduce.main([
            "--grid", str(gfile), *recipe, "--n-train", "40", "--n-val", "4", "--n-test", "30",
            "--figures-dir", str(tmp_path / "figures"),
            f"data.root={tmp_path}/data", f"clip.pretrained={demo_clip_smoke}", f"run.root={tmp_path}/runs",
            "fewshot.shots=16", "pseudo.k=8"])
    finally:
        torch.set_num_threads(threads)
    info = json.loads((tmp_path / "runs" / "ptnl" / "sweeps" / "demo_small" / "demo_info.json").read_text())
    assert "pretrain_s" not in info  # the session's smoke CLIP was found in the cache, not trained again
    rows = {(r["method"], r["noise_rate"], r["loss"]): r for r in out["rows"]}
    assert len(rows) == 1 + 1 + 1 + 2 + 2
    assert all(0 <= r["mean"] <= 100 for r in rows.values())
    ce = rows[("coop", 0.0, "ce")]
    assert ce["seeds"] == 2 and "ensemble" in ce
    zs = rows[("zeroshot", "-", "-")]["mean"]
    lp0, lp50 = rows[("linear_probe", 0.0, "-")]["mean"], rows[("linear_probe", 0.5, "-")]["mean"]
    # what the smoke profile learns (chance is 10 %; 300 test images, one standard error ~3 points);
    # calibrated below the values measured at this profile (see the commit):
    assert zs > 18                       # the smoke CLIP learned from captions
    assert lp0 > 30                      # the probe learns the task from 16 clean shots per class
    assert lp50 < lp0 - 8                # ... and half the labels wrong cost it accuracy
    assert ce["mean"] > 18               # CoOp prompt tuning learns the task
    assert rows[("coop", 0.5, "gce q=0.7")]["train_noise"] == pytest.approx(0.5, abs=0.1)
    assert "CoOp prompt tuning, GCE, q=0.7" in out["table"] and "robust UPL" in out["table"]
    assert (tmp_path / "runs" / "ptnl" / "sweeps" / "demo_small" / "results_table.md").is_file()
    assert out["figure"].is_file() and out["figure"].stat().st_size > 1000           # the headline figure
    assert list((tmp_path / "runs" / "ptnl" / "sweeps" / "demo_small" / "tb").glob("events.out.tfevents.*"))

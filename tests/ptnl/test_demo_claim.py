"""The demo's claim at a reduced size (demo_claim: `make test-claims`, minutes; the full size is
`make reproduce-ptnl`): Fashion-MNIST in CoOp's layout with every image dark, the demo CLIP's "looks" variant
(its cache: trained once per machine, ~4 min on 2 idle cores), then zero-shot, CoOp with CE/GCE and
the linear probe at noise 0/50 %, UPL and robust UPL, the table and the headline figure; and the
paper's finding at demo scale, prompt tuning above zero-shot on clean shots included."""
import json

import pytest
import torch

from projects.ptnl import reproduce
from shared.clip import demo_clip
from shared.data import fashion_mnist


@pytest.mark.demo_claim
@pytest.mark.timeout(900)
def test_demo_claim_prompt_tuning_beats_zero_shot_and_the_noisy_probe(tmp_path):
    if fashion_mnist.find_root() is None:
        pytest.skip(fashion_mnist.HOW_TO_GET)
    # 10 epochs everywhere but clean CE, which gets the official 50: at 10, clean CE is still unsettled
    # (measured at this size, seeds 1-6: 46.7-70.3 %, one seed below zero-shot's 52.3); at 50, 66.7-71.7 %
    grid = {"name": "demo_small", "project": "ptnl", "datasets": ["demo"], "overrides": ["optim.epochs=10"], "grids": [
        {"fixed": {"method": "zeroshot"}, "axes": {"run.seed": [1]}},
        {"fixed": {"method": "coop", "loss.name": "ce", "optim.epochs": 50},
         "axes": {"fewshot.noise_rate": [0.0], "run.seed": [1, 2]}},
        {"fixed": {"method": "coop", "loss.name": "gce"}, "axes": {"fewshot.noise_rate": [0.5], "run.seed": [1, 2]}},
        {"fixed": {"method": "linear_probe"}, "axes": {"fewshot.noise_rate": [0.0, 0.5], "run.seed": [1, 2]}},
        {"fixed": {"method": "upl", "loss.name": "ce"}, "axes": {"run.seed": [1]}},
        {"fixed": {"method": "robust_upl", "loss.name": "gce"}, "axes": {"run.seed": [1]}}]}
    gfile = tmp_path / "grid.yaml"
    gfile.write_text(json.dumps(grid))
    threads = torch.get_num_threads()
    try:
        clip = demo_clip.ensure_demo_clip(variant="looks")
        out = reproduce.main([
            "--grid", str(gfile), "--n-train", "40", "--n-val", "4", "--n-test", "30",
            "--figures-dir", str(tmp_path / "figures"),
            f"data.root={tmp_path}/data", f"clip.pretrained={clip}", f"run.root={tmp_path}/runs",
            "fewshot.shots=16", "pseudo.k=8"])
    finally:
        torch.set_num_threads(threads)
    rows = {(r["method"], r["noise_rate"], r["loss"]): r for r in out["rows"]}
    assert len(rows) == 1 + 1 + 1 + 2 + 2
    assert all(0 <= r["mean"] <= 100 for r in rows.values())
    assert all(r["seeds"] == 2 and "ensemble" in r for k, r in rows.items() if k[0] in ("coop", "linear_probe"))
    zs = rows[("zeroshot", "-", "-")]["mean"]
    ce0 = rows[("coop", 0.0, "ce")]["mean"]
    gce50 = rows[("coop", 0.5, "gce q=0.7")]["mean"]
    lp0, lp50 = rows[("linear_probe", 0.0, "-")]["mean"], rows[("linear_probe", 0.5, "-")]["mean"]
    # the paper's finding at demo scale (chance is 10 %):
    assert ce0 > 30                      # CoOp with CE on clean shots learns the task
    # ... and beats zero-shot: the images are dark, "a photo of a {}." names the plain look, and the demo
    # CLIP's text tower reads the look's words (its "looks" pre-training), so the learned context has a
    # domain to adapt to. Measured at this size: zero-shot 52.3, CE 66.7-71.7 (seeds 1-6, std 1.8); the
    # full demo: 51.3 vs 67.5 +- 1.4 (seeds 1-4). 8 points is over 4 seed std below the smallest gain.
    assert ce0 > zs + 8
    assert gce50 > lp50 + 5              # with half the labels wrong, GCE prompt tuning beats the linear probe
    assert lp50 < lp0                    # noise hurts the linear probe
    assert zs > 30                       # the demo CLIP learned from captions
    assert rows[("coop", 0.5, "gce q=0.7")]["train_noise"] == pytest.approx(0.5, abs=0.1)
    assert "CoOp prompt tuning, GCE, q=0.7" in out["table"] and "robust UPL" in out["table"]
    assert (tmp_path / "runs" / "ptnl" / "sweeps" / "demo_small" / "results_table.md").is_file()
    assert out["figure"].is_file() and out["figure"].stat().st_size > 1000           # the headline figure
    assert list((tmp_path / "runs" / "ptnl" / "sweeps" / "demo_small" / "tb").glob("events.out.tfevents.*"))

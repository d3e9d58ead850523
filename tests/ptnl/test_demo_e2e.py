"""The demo pipeline end to end at a reduced size (`python -m projects.ptnl.reproduce` does the same
at full size): Fashion-MNIST in CoOp's layout, a CLIP trained from scratch on captions, then
zero-shot, CoOp with CE/GCE and the linear probe at noise 0/50 %, UPL and robust UPL, the table."""
import json

import pytest
import torch

from projects.ptnl import reproduce
from shared.data import fashion_mnist


@pytest.mark.e2e
def test_demo_pipeline_end_to_end(tmp_path):
    if fashion_mnist.find_root() is None:
        pytest.skip(fashion_mnist.HOW_TO_GET)
    grid = {"name": "demo_small", "datasets": ["demo"], "grids": [
        {"fixed": {"method": "zeroshot"}, "axes": {"run.seed": [1]}},
        {"fixed": {"method": "coop"},
         "axes": {"fewshot.noise_rate": [0.0, 0.5], "loss.name": ["ce", "gce"], "run.seed": [1, 2]}},
        {"fixed": {"method": "linear_probe"}, "axes": {"fewshot.noise_rate": [0.0, 0.5], "run.seed": [1, 2]}},
        {"fixed": {"method": "upl", "loss.name": "ce"}, "axes": {"run.seed": [1, 2]}},
        {"fixed": {"method": "robust_upl", "loss.name": "gce"}, "axes": {"run.seed": [1, 2]}}]}
    gfile = tmp_path / "grid.yaml"
    gfile.write_text(json.dumps(grid))
    threads = torch.get_num_threads()
    try:
        out = reproduce.main([
            "--grid", str(gfile), "--n-train", "40", "--n-val", "4", "--n-test", "30", "--pretrain-steps", "80",
            f"data.root={tmp_path}/data", f"clip.pretrained={tmp_path}/data/demo_clip.pt", f"run.root={tmp_path}/runs",
            "fewshot.shots=8", "pseudo.k=8", "optim.epochs=6"])
    finally:
        torch.set_num_threads(threads)
    rows = {(r["method"], r["noise_rate"], r["loss"]): r for r in out["rows"]}
    assert len(rows) == 1 + 4 + 2 + 2
    assert all(0 <= r["mean"] <= 100 for r in rows.values())
    assert all(r["seeds"] == 2 and "ensemble" in r for k, r in rows.items() if k[0] != "zeroshot")
    assert rows[("zeroshot", "-", "-")]["mean"] > 30           # chance is 10 %: the CLIP learned from captions
    lp0, lp50 = rows[("linear_probe", 0.0, "-")]["mean"], rows[("linear_probe", 0.5, "-")]["mean"]
    assert lp50 < lp0                                          # noise hurts the linear probe
    assert rows[("coop", 0.5, "ce")]["train_noise"] == pytest.approx(0.5, abs=0.1)
    assert "CoOp prompt tuning, GCE, q=0.7" in out["table"] and "robust UPL" in out["table"]
    assert (tmp_path / "runs" / "ptnl" / "sweeps" / "demo_small" / "results_table.md").is_file()

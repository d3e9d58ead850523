import pytest
import torch

from shared.config import load_config
from projects.accel_ssl import bench
from projects.accel_ssl.compression import Setting

TINY = ["model.arch=vit_test", "method.hidden_dim=32", "method.out_dim=16", "method.bottleneck_dim=16"]


@pytest.mark.slow
def test_bench_measures_what_the_configs_run_and_both_branches():
    res = bench.main(["--methods", "mocov3", "--batch", "4", "--steps", "1", *TINY])
    r = res["results"]["mocov3"]
    assert r["batch"] == 4 and r["full"]["speedup"] == 1.0 and r["full"]["pct_bf16_peak"] is None  # CPU: no peak
    assert {"keep0.5 online", "keep0.25 online", "patch8", "keep0.5 both", "keep0.25 both"} <= set(r)
    # online-only dropout keeps the momentum branch full: fewer FLOPs saved than dropping on both branches
    assert r["keep0.5 both"]["flop_ratio"] > r["keep0.5 online"]["flop_ratio"] > 1.0
    assert r["full"]["gflops_per_img"] > 0 and r["full"]["trunk_gflops_per_img"] > 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_compiled_step_has_no_graph_break():
    """Dropout noise drawn before the step and cached device tables: dynamo traces the whole loss."""
    cfg = load_config("projects/accel_ssl/configs/demo_mocov3.yaml", TINY)
    b = bench.Bench(cfg, 4, torch.device("cpu"), use_compile=False)
    assert b.graph_breaks(Setting(patch=8, keep_online=(0.5,), keep_target=(0.5,))) == 0

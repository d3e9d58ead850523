"""The bench runs a real CoOp step through shared.benchmark on a tiny random CLIP."""
import torch

from projects.ptnl import bench


def test_bench_times_a_training_step(tmp_path):
    n = torch.get_num_threads()
    try:
        res = bench.main(["--archs", "tiny-clip-vit", "--classes", "5", "--batch", "4", "--steps", "2",
                          "--out", str(tmp_path / "b.json")])
    finally:
        torch.set_num_threads(n)
    (r,) = res["results"]
    assert r["variant"] == "fp32" and r["steps_per_s"] > 0 and r["images_per_s"] == r["steps_per_s"] * 4
    assert 0 < r["text_tower_share"] <= 1 and r["tflops"] > 0 and (tmp_path / "b.json").is_file()

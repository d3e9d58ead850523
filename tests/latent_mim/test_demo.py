import pytest

from shared.logging import read_metrics
from projects.latent_mim.reproduce import main as reproduce

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_demo_pipeline_learns_and_writes_its_table(tmp_path, fmnist_root):
    root = tmp_path / "runs"
    rows = reproduce(["--config", "projects/latent_mim/configs/test.yaml", "--variants", "latent_mim,regression", "--no-report",
                      f"run.root={root}", f"data.root={fmnist_root}", "optim.epochs=6", "optim.blr=0.02",
                      "eval.segmentation_images=2", "eval.segmentation_clusters=2", "eval.linear_probe=true",
                      "eval.linear_probe_epochs=5"])
    assert set(rows) == {"latent_mim", "regression", "random init (same encoder)", "raw pixels"}
    losses = [m["train/loss_main"] for m in read_metrics(root / "latent_mim" / "test") if "train/loss_main" in m]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.02  # the patch InfoNCE goes down
    for r in rows.values():
        assert 0.0 <= r["knn_top1"] <= 1.0 and 0.0 <= r["linear_top1"] <= 1.0
    assert rows["raw pixels"]["knn_top1"] > 0.5  # the generated classes are separable
    assert (root / "latent_mim" / "demo_table.md").read_text().count("\n") == 6
    assert (root / "latent_mim" / "test" / "segmentation.png").stat().st_size > 1000

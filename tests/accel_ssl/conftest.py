import pytest

from shared.config import load_config
from tests.fmnist_blobs import write_blob_fmnist


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory):
    """A small set in Fashion-MNIST's idx format: 10 classes of 28x28 blobs at class-specific places."""
    return write_blob_fmnist(tmp_path_factory.mktemp("fmnist"))


def tiny_cfg(method: str, root, run_root, *extra):
    return load_config(f"projects/accel_ssl/configs/demo_{method}.yaml", [
        f"data.root={root}", f"run.root={run_root}", "data.num_workers=0", "data.train_subset=64",
        "model.arch=vit_test", "method.hidden_dim=32", "method.out_dim=16", "method.bottleneck_dim=16",
        "optim.batch_size=16", "optim.epochs=2", "train.log_every=1", "train.ckpt_every_steps=3",
        "eval.knn_train_size=100", "eval.knn_test_size=40", "eval.batch_size=50", *extra])

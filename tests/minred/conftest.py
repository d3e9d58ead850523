import pytest

from shared.config import load_config
from tests.fmnist_blobs import write_blob_fmnist


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory):
    """A small set in Fashion-MNIST's idx format: 10 classes of 28x28 blobs at class-specific places."""
    return write_blob_fmnist(tmp_path_factory.mktemp("fmnist"))


def tiny_cfg(root, run_root, *extra):
    return load_config("projects/minred/configs/demo.yaml", [
        f"data.root={root}", f"run.root={run_root}", "data.train_subset=96", "data.img_size=16",
        "data.n_seq_samples=8", "optim.batch_size=8", "buffer.size=32", "buffer.num_updates=2",
        "model.dim=32", "model.pred_dim=8", "train.log_every=1", "train.ckpt_every_steps=4", "train.buffer_log_every=2",
        "eval.train_size=100", "eval.test_size=40", "eval.lincls_epochs=20", "eval.lincls_batch_size=50", *extra])

import pytest

from shared.config import load_config
from tests.fmnist_blobs import write_blob_fmnist

TEST_CFG = "projects/latent_mim/configs/test.yaml"


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory):
    """A small set in Fashion-MNIST's idx format: 10 classes of 28x28 bright blocks at class-specific places."""
    return write_blob_fmnist(tmp_path_factory.mktemp("fmnist"), n_test=100, rows=(2, 14), cols=(1, 7))


@pytest.fixture
def cfg_factory(tmp_path, fmnist_root):
    def make(*overrides, config=TEST_CFG):
        return load_config(config, [f"run.root={tmp_path}/runs", f"data.root={fmnist_root}", *overrides])
    return make

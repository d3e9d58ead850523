import gzip

import numpy as np
import pytest

from shared.config import load_config

TEST_CFG = "projects/latent_mim/configs/test.yaml"


def write_idx(path, arr: np.ndarray) -> None:
    header = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory):
    """A small set in Fashion-MNIST's idx format: 10 classes of 28x28 bright blocks at class-specific places."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 320), ("t10k", 100)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, c in enumerate(labels):
            r, col = divmod(int(c), 5)
            images[i, 2 + 12 * r: 14 + 12 * r, 1 + 5 * col: 7 + 5 * col] += 200
        write_idx(root / f"{split}-images-idx3-ubyte.gz", np.clip(images, 0, 255))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture
def cfg_factory(tmp_path, fmnist_root):
    def make(*overrides, config=TEST_CFG):
        return load_config(config, [f"run.root={tmp_path}/runs", f"data.root={fmnist_root}", *overrides])
    return make

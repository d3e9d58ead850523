import gzip

import numpy as np
import pytest

from shared.config import load_config


def write_idx(path, arr: np.ndarray) -> None:
    header = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory):
    """A small set in Fashion-MNIST's idx format: 10 classes of 28x28 blobs at class-specific places."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 320), ("t10k", 80)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, c in enumerate(labels):
            r, col = divmod(int(c), 5)
            images[i, 4 + 12 * r: 12 + 12 * r, 1 + 5 * col: 6 + 5 * col] += 200
        write_idx(root / f"{split}-images-idx3-ubyte.gz", np.clip(images, 0, 255))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def tiny_cfg(root, run_root, *extra):
    return load_config("projects/minred/configs/demo.yaml", [
        f"data.root={root}", f"run.root={run_root}", "data.train_subset=96", "data.img_size=16",
        "data.n_seq_samples=8", "optim.batch_size=8", "buffer.size=32", "buffer.num_updates=2",
        "model.dim=32", "model.pred_dim=8", "train.log_every=1", "train.ckpt_every_steps=4", "train.buffer_log_every=2",
        "eval.train_size=100", "eval.test_size=40", "eval.lincls_epochs=20", "eval.lincls_batch_size=50", *extra])

import pytest

from shared.config import load_config
from shared.data.tuxpaint import make_tuxpaint_av
from tests.conftest import skip_unless_installed


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A tiny tuxpaint set: 64 px frames, 0.4 s clips at 11,025 Hz."""
    skip_unless_installed("tuxpaint")
    return make_tuxpaint_av(tmp_path_factory.mktemp("oneavm_tiny"), n_train=8, n_test=6, n_duet=3, n_pairs=3,
                            size=64, duration=0.4, seed=1)


def tiny_cfg(root, run_root, *extra):
    """The demo config at toy size: random weights, 64 px frames (2x2 maps), 4095-sample clips on a
    32 x 64 log-frequency grid, a 4-level U-Net, batch 4."""
    return load_config("projects/oneavm/configs/demo.yaml", [
        f"data.root={root}", f"run.root={run_root}", "data.num_workers=0", "data.image_size=64",
        "data.audio.n_samples=4095", "data.audio.n_fft=254", "data.audio.hop=64", "data.audio.n_freq_out=32",
        "model.image_weights=null", "model.dim=32", "model.unet_levels=4", "model.unet_ngf=8",
        "model.sep_channels=8", "optim.batch_size=4", "optim.epochs=1", "train.log_every=1",
        "train.ckpt_every_steps=0", "train.ckpt_every_epochs=0", "eval.n_visualizations=2", "eval.batch_size=6", *extra])

import pytest

from shared.config import load_config
from shared.data.demo_av import generate


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("ezvsl_tiny"), n_train=32, n_val=8, n_test=8, n_objects=6, seed=1,
                    duration=1.0)


def tiny_cfg(root, run_root, *extra):
    """The demo config at toy size: random weights, 64 px frames, 0.5 s audio, 4 steps an epoch."""
    return load_config("projects/ezvsl/configs/demo.yaml", tiny_overrides(root, run_root, *extra))


def tiny_overrides(root, run_root, *extra) -> list[str]:
    """tiny_cfg's overrides of the demo config, for a command line."""
    return [
        f"data.root={root}", f"run.root={run_root}", "data.num_workers=0", "data.image_size=64",
        "data.audio.duration=0.5", "model.image_weights=null", "model.ogl_weights=null", "optim.batch_size=8",
        "optim.epochs=2", "train.log_every=1", "train.ckpt_every_steps=2", "eval.n_visualizations=2",
        "eval.batch_size=4", *extra]

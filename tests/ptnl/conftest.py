import pytest

from shared.clip.synthetic import CLASSES, write_synthetic_coop  # noqa: F401 (used by tests)
from shared.config import load_config


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ptnl_synth")
    write_synthetic_coop(root)
    return root


def tiny_cfg(root, run_root, *extra, arch="tiny-clip-vit"):
    """The demo config on the synthetic dataset with a random-init tiny CLIP, 4 shots, 2 epochs."""
    return load_config("projects/ptnl/configs/demo.yaml", [
        f"data.root={root}", "data.dataset=Synth", "data.dataset_dir=synth", "data.image_dir=images",
        "data.split_file=split_zhou_Synth.json", f"run.root={run_root}", f"clip.arch={arch}", "clip.pretrained=null",
        "fewshot.shots=4", "pseudo.k=4", "optim.epochs=2", "optim.batch_size=8", "eval.batch_size=16",
        "train.log_every=1", *extra])

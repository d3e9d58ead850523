import pytest
import torch

from shared.clip.models import load_clip
from shared.clip.synthetic import write_synthetic_coop
from shared.config import load_config


@pytest.fixture(scope="session")
def tiny_clip():
    """tiny-clip-vit: 32 px, patch 8 -> 4 x 4 = 16 patches, 2 blocks, width 64; random init, fp32."""
    torch.manual_seed(0)
    return load_clip("tiny-clip-vit", None)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("patch_ranking_synth")
    write_synthetic_coop(root, n_train=8, n_val=1, n_test=4)
    return root


def tiny_cfg(root, run_root, *extra):
    """The demo config on the synthetic CoOp dataset with a random-init tiny CLIP and tiny phases."""
    return load_config("projects/patch_ranking/configs/demo.yaml", [
        f"data.root={root}", "data.dataset=Synth", "data.dataset_dir=synth", "data.image_dir=images",
        "data.split_file=split_zhou_Synth.json", f"run.root={run_root}", "clip.arch=tiny-clip-vit",
        "clip.pretrained=null", "golden.steps=4", "golden.tokens_per_step=2", "golden.batch_size=8",
        "predictor.epochs=3", "predictor.batch_size=8", "prompts.shots=2", "prompts.epochs=1",
        "prompts.batch_size=4", "eval.batch_size=16", "eval.speed_batch=4", "eval.speed_repeats=1",
        "eval.keep_ratios=[1.0,0.6]", "train.log_every=1", *extra])

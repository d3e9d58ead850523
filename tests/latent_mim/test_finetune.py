import pytest
import torch

from shared.config import load_config
from projects.latent_mim.finetune import build_classifier, main
from projects.latent_mim.model import build_model

pytestmark = pytest.mark.timeout(120)


def test_finetune_loads_a_pretrained_encoder_and_trains(tmp_path, fmnist_root, cfg_factory):
    pre = build_model(cfg_factory())
    ckpt = tmp_path / "pre.pt"
    torch.save({"model": pre.state_dict()}, ckpt)
    cfg = load_config("projects/latent_mim/configs/finetune_base.yaml", [
        f"run.root={tmp_path}/runs", "run.name=ft", f"data.root={fmnist_root}", "data.dataset=fashion_mnist",
        "data.num_workers=0", "data.eval_crop_ratio=0", "data.train_subset=32", "model.arch=custom", "model.dim=32",
        "model.depth=2", "model.heads=2", "model.patch_size=4", "model.in_chans=1", "model.grid_size=4",
        f"model.checkpoint={ckpt}", "optim.batch_size=16", "optim.epochs=1", "optim.warmup_epochs=1",
        "train.amp=none", "train.log_every=1", "aug.rand_augment=''", "aug.reprob=0.0"])
    vit = build_classifier(cfg, 10)
    torch.testing.assert_close(vit.blocks[1].attn.qkv.weight, pre.encoder.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(vit.pos_embed[0], pre.encoder.pos_embed.pos_embeds)
    res = main(cfg)
    assert res["steps"] == 2 and 0.0 <= res["finetune_top1"] <= 1.0

"""DINO against the official behaviour (facebookresearch/dino: main_dino.py, utils.py, vision_transformer.py),
re-implemented here from reading it: per-tensor gradient clipping, then cancelling the last layer's gradients;
the head run once on all crops (MultiCropWrapper); a teacher without stochastic depth; LayerNorm eps 1e-6."""
import copy

import torch
from timm.layers import DropPath
from torch import nn

from projects.accel_ssl.compression import Setting
from projects.accel_ssl.losses import dino_loss
from projects.accel_ssl.model import build_model
from projects.accel_ssl.train import prepare_grads
from tests.accel_ssl.conftest import tiny_cfg
from tests.accel_ssl.test_frameworks import batch


def official_clip_gradients(model, clip):
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.norm(2)
            coef = clip / (norm + 1e-6)
            if coef < 1:
                p.grad.mul_(coef)


def official_cancel_last_layer(epoch, model, freeze_last_layer):
    if epoch >= freeze_last_layer:
        return
    for n, p in model.named_parameters():
        if "last_layer" in n:
            p.grad = None


def official_multicrop(backbone_fn, head, crops):
    """MultiCropWrapper: crops of one resolution concatenated through the backbone, the head on all outputs."""
    out, start = [], 0
    sizes = [c.shape[-1] for c in crops]
    while start < len(crops):
        end = start
        while end < len(crops) and sizes[end] == sizes[start]:
            end += 1
        out.append(backbone_fn(torch.cat(crops[start:end])))
        start = end
    return head(torch.cat(out))


def _with_grads(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:  # a spread of norms: some tensors above the clip, some below
            p.grad = torch.randn(p.shape, generator=g) * float(torch.rand(1, generator=g) * 3)


def test_clip_then_cancel_matches_official(fmnist_root, tmp_path):
    model = build_model(tiny_cfg("dino", fmnist_root, tmp_path))
    ours, theirs = model, copy.deepcopy(model)
    for m in (ours, theirs):
        _with_grads(m)
    norms = [p.grad.norm() for p in ours.parameters() if p.grad is not None]
    assert min(norms) < 0.5 < max(norms)  # the clip acts on some tensors and not on others
    prepare_grads(ours, 0.5, "per_tensor", cancel_last_layer=True)
    official_clip_gradients(theirs, 0.5)
    official_cancel_last_layer(0, theirs, 1)
    for (n, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert (a.grad is None) == (b.grad is None), n
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-8), n
    assert all(p.grad is None for n, p in ours.named_parameters() if "last_layer" in n)
    # after the freeze: clipped, not cancelled
    _with_grads(ours, 1)
    prepare_grads(ours, 0.5, "per_tensor", cancel_last_layer=False)
    assert ours.head.last_layer.parametrizations.weight.original1.grad.norm() <= 0.5 + 1e-5


def test_head_sees_all_crops_together_as_official(fmnist_root, tmp_path):
    cfg = tiny_cfg("dino", fmnist_root, tmp_path, "method.use_bn_in_head=true")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    views = batch(cfg, 8)  # 2 global 32 px + 2 local 16 px crops
    ref = copy.deepcopy(model)
    sizes = []
    model.head.mlp[0].register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    gens = [torch.Generator().manual_seed(i) for i in range(len(views) + 2)]
    loss, _ = model.loss(views, Setting(), gens, teacher_temp=0.04)
    assert sizes == [len(views) * 8]  # one head call on all crops (BatchNorm statistics over all of them)
    with torch.no_grad():
        t_out = official_multicrop(lambda x: ref.t_backbone(x), ref.t_head, views[:2])
    s_out = official_multicrop(lambda x: ref.backbone(x), ref.head, views)
    expected = dino_loss(s_out, t_out, ref.center, len(views), ref.student_temp, 0.04)
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6)


def test_teacher_has_no_stochastic_depth_and_layernorm_eps(fmnist_root, tmp_path):
    cfg = tiny_cfg("dino", fmnist_root, tmp_path, "model.drop_path_rate=0.1")
    model = build_model(cfg).train()
    assert any(isinstance(m, DropPath) for m in model.backbone.modules())  # the student has it (official)
    assert not any(isinstance(m, DropPath) for m in model.t_backbone.modules())
    # the teacher's parameters still pair one-to-one with the student's for the EMA
    assert [n for n, _ in model.t_backbone.named_parameters()] == [n for n, _ in model.backbone.named_parameters()]
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.t_backbone(x), model.t_backbone(x))  # train mode, deterministic
    lns = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert lns and all(m.eps == 1e-6 for m in lns)

import math

import pytest
import torch

from projects.latent_mim.decoder import visual_cue
from projects.latent_mim.optim import lr_at, momentum_at, param_groups, peak_lr, sim_target_at
from projects.latent_mim.model import build_model

pytestmark = pytest.mark.timeout(60)


def batch(model, b=3, seed=0):
    s = model.train_crop
    return torch.randn(b, model.encoder.in_chans, s, s, generator=torch.Generator().manual_seed(seed))


def capture_inputs(module):
    seen = []
    h = module.register_forward_pre_hook(lambda m, args: seen.append(args))
    return seen, h


@pytest.mark.parametrize("mask_target", [True, False])
def test_target_encoder_sees_only_masked_patches(cfg_factory, mask_target):
    model = build_model(cfg_factory(f"model.mask_target={mask_target}"))
    tgt, h1 = capture_inputs(model.target_encoder)
    onl, h2 = capture_inputs(model.encoder)
    dec, h3 = capture_inputs(model.decoder)
    model(batch(model), torch.Generator().manual_seed(0))
    for h in (h1, h2, h3):
        h.remove()
    n, nv = model.encoder.num_patches, model.num_vis
    (t_patches, t_pid), (v_patches, v_pid) = tgt[0], onl[0]
    _, d_vis_pid, d_mask_pid = dec[0]
    assert v_pid.shape == (3, nv) and torch.equal(d_vis_pid, v_pid)
    assert d_mask_pid.shape == (3, n - nv)
    for i in range(3):
        vis, masked = set(v_pid[i].tolist()), set(d_mask_pid[i].tolist())
        assert not vis & masked and len(vis | masked) == n
        if mask_target:
            assert torch.equal(t_pid[i], d_mask_pid[i])  # only the masked patches, in prediction order
        else:
            assert t_pid.shape[1] == n and torch.equal(t_pid[i, -(n - nv):], d_mask_pid[i])
    assert t_patches.shape[1] == t_pid.shape[1] and v_patches.shape[1] == nv


def test_gradients_reach_exactly_the_trainable_parameters(cfg_factory):
    model = build_model(cfg_factory())
    loss, metrics = model(batch(model), torch.Generator().manual_seed(0))
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("target_encoder."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert set(metrics) >= {"train/avg_sim_pred", "train/avg_sim_vis", "train/avg_sim_trg"}
    # fixed sin-cos positions are buffers, never trained
    assert "encoder.pos_embed.pos_embeds" in dict(model.named_buffers())


def test_joint_mode_has_no_target_encoder_and_trains_through_targets(cfg_factory):
    model = build_model(cfg_factory("model.target=joint"))
    assert model.target_encoder is None
    loss, _ = model(batch(model), torch.Generator().manual_seed(0))
    loss.backward()
    assert model.encoder.head[0].weight.grad is not None


def test_ema_update_and_schedule(cfg_factory):
    model = build_model(cfg_factory())
    for p, t in zip(model.encoder.parameters(), model.target_encoder.parameters()):
        assert torch.equal(p, t)  # initialised as a copy
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = [t.clone() for t in model.target_encoder.parameters()]
    model.update_target(0.9)
    for p, t, t0 in zip(model.encoder.parameters(), model.target_encoder.parameters(), before):
        torch.testing.assert_close(t, t0 * 0.9 + p * 0.1)
    # official adjust_target_momentum: 1 - 0.5 (1 + cos(pi ep / E)) (1 - m0)
    assert momentum_at(0, 300, 0.99) == pytest.approx(0.99)
    assert momentum_at(150, 300, 0.99) == pytest.approx(0.995)
    assert momentum_at(300, 300, 0.99) == pytest.approx(1.0)
    assert sim_target_at(0, 800, 0.75, 0.25) == pytest.approx(0.75)
    assert sim_target_at(800, 800, 0.75, 0.25) == pytest.approx(0.25)


def official_adjust_learning_rate(epoch, lr, min_lr_frac, warmup_epochs, epochs):
    """util/lr_sched.py adjust_learning_rate with min_lr_frac, re-implemented from reading it."""
    min_lr = lr * min_lr_frac
    if epoch < warmup_epochs:
        return min_lr + (lr - min_lr) * epoch / warmup_epochs
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


def test_lr_schedule_is_the_official_one(cfg_factory):
    cfg = cfg_factory("optim.batch_size=256", "optim.accum_iter=2")
    peak = peak_lr(cfg.optim, world_size=8)
    assert peak == pytest.approx(1.5e-4 * 4096 / 256)  # 2.4e-3, the README command
    for ep in (0.0, 0.37, 20.0, 40.0, 41.5, 400.0, 799.9):
        assert lr_at(ep, peak, 800, 40, 0.25) == pytest.approx(official_adjust_learning_rate(ep, peak, 0.25, 40, 800))
    assert lr_at(0, peak, 800, 40, 0.25) == pytest.approx(0.25 * peak)  # warm-up starts at min_lr, not 0


def official_decay_split(model):
    """timm param_groups_weight_decay with the official no_weight_decay_list, by hand."""
    decay, no_decay = set(), set()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or n.endswith(".bias") or "bias" in n or "norm" in n or "embed" in n:
            no_decay.add(n)
        else:
            decay.add(n)
    return decay, no_decay


@pytest.mark.parametrize("freeze_pe", [True, False])
def test_weight_decay_groups_are_the_official_ones(cfg_factory, freeze_pe):
    model = build_model(cfg_factory(f"model.freeze_pe={freeze_pe}"))
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    got = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in groups}
    decay, no_decay = official_decay_split(model)
    assert got[0.05] == decay and got[0.0] == no_decay
    assert "encoder.embed.proj.weight" in no_decay and "decoder.embed.weight" in no_decay
    assert {"encoder.cls_token", "decoder.mask_token", "decoder.cls_token", "encoder.blocks.0.attn.qkv.weight"} <= decay
    assert not any(n.startswith("target_encoder.") for n in decay | no_decay)


def test_visual_cue_weights_depend_on_positions_only():
    g = torch.Generator().manual_seed(0)
    pe_q, pe_k = torch.randn(1, 4, 8, generator=g), torch.randn(1, 3, 8, generator=g)
    values = torch.eye(3).unsqueeze(0)  # one-hot values read out the weights
    w = visual_cue(pe_q, pe_k, values)
    torch.testing.assert_close(w, ((pe_q @ pe_k.transpose(1, 2)) / math.sqrt(8)).softmax(-1))
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 4))


def test_decoder_without_cues_runs(cfg_factory):
    model = build_model(cfg_factory("model.visual_cues=false"))
    assert not model.decoder.visual_cues
    loss, _ = model(batch(model), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


def test_bad_input_is_a_clear_error(cfg_factory):
    model = build_model(cfg_factory())
    with pytest.raises(ValueError, match="training crops must be 20 px"):
        model(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="num_vis"):
        build_model(cfg_factory("model.num_vis=16"))(batch(model))
    with pytest.raises(ValueError, match="loss.name"):
        build_model(cfg_factory("loss.name=mse"))
    with pytest.raises(ValueError, match="model.method"):
        build_model(cfg_factory("model.method=beit"))

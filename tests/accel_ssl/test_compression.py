import pytest
import torch
import torch.nn.functional as F

from projects.accel_ssl.compression import Schedule, Setting
from projects.accel_ssl.vit import SeqCompressViT, keep_count, sincos_pos_embed_2d, token_dropout
from shared.schedules import cosine_ramp, linear_warmup_constant, warmup_then_decay


def test_token_dropout_count_per_sample_and_seed():
    x = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 10, 1).repeat(1, 1, 3)
    a = token_dropout(x, 0.3, torch.Generator().manual_seed(5))
    b = token_dropout(x, 0.3, torch.Generator().manual_seed(5))
    assert a.shape == (2, 3, 3) and torch.equal(a, b)
    assert not torch.equal(a[0, :, 0] % 10, a[1, :, 0] % 10)  # another subset for each sample
    c = token_dropout(x, 0.3, torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)
    assert keep_count(49, 0.25) == 12 and keep_count(3, 0.1) == 1
    assert token_dropout(x, 1.0) is x


def test_vit_sees_cls_plus_kept_tokens():
    torch.manual_seed(0)
    m = SeqCompressViT("vit_test", img_size=32, patch_size=8, in_chans=1)
    seen = []
    m.vit.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    x = torch.randn(3, 1, 32, 32)
    m(x, keep=0.5, generator=torch.Generator().manual_seed(0))
    assert seen[-1].shape[1] == 1 + 8 == m.num_tokens(32, 8, 0.5)
    assert torch.allclose(seen[-1][:, 0], m.vit.cls_token[0, 0].expand(3, -1))  # CLS kept, first
    m(x, patch_size=16)
    assert seen[-1].shape[1] == 1 + 4


def test_resized_kernel_on_resized_patches_matches_base(tmp_path):
    """FlexiViT's property: <x, w> = <resize(x), PI-resize(w)> when the patch grows."""
    torch.manual_seed(0)
    m = SeqCompressViT("vit_test", img_size=32, patch_size=8, in_chans=1, freeze_patch_embed=False)
    x = torch.randn(2, 1, 32, 32)
    base = F.conv2d(x, m.patch_kernel(8), stride=8)  # (2, D, 4, 4)
    patches = x.unfold(2, 8, 8).unfold(3, 8, 8)  # (2, 1, 4, 4, 8, 8)
    up = F.interpolate(patches.reshape(-1, 1, 8, 8), size=(16, 16), mode="bicubic", antialias=True,
                       align_corners=False)
    big = up.reshape(2, 1, 4, 4, 16, 16).permute(0, 1, 2, 4, 3, 5).reshape(2, 1, 64, 64)
    resized = F.conv2d(big, m.patch_kernel(16), stride=16)
    assert torch.allclose(base, resized, atol=1e-4, rtol=1e-3)
    # and gradients reach the one base kernel through the resize
    m.patch_kernel(16).sum().backward()
    assert m.vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_sincos_matches_mocov3_layout():
    pe = sincos_pos_embed_2d(2, 3, 8)
    assert pe.shape == (6, 8)
    # token 4 is row 1, column 1: first half encodes the row, second half the column; omega = [1, 1e-2]
    assert torch.allclose(pe[4], torch.tensor([torch.sin(torch.tensor(1.0)), torch.sin(torch.tensor(0.01)),
                                               torch.cos(torch.tensor(1.0)), torch.cos(torch.tensor(0.01)),
                                               torch.sin(torch.tensor(1.0)), torch.sin(torch.tensor(0.01)),
                                               torch.cos(torch.tensor(1.0)), torch.cos(torch.tensor(0.01))]))


def test_schedules_parse_and_apply():
    s = Schedule.from_config([{"until": 0.5, "keep_online": 0.25}, {"until": 0.8, "patch": 32, "keep_online": [0.5, 1.0]},
                              {"until": 1.0}])
    assert s.at(0.0).keep("online", 0) == 0.25 and s.at(0.49).patch is None
    assert s.at(0.5).patch == 32 and s.at(0.5).keep("online", 1) == 1.0 and s.at(0.5).keep("online", 2) == 0.5
    assert s.at(0.99) == Setting() and s.at(1.0) == Setting()
    assert Schedule.from_config([]).at(0.3) == Setting()
    with pytest.raises(ValueError, match="increasing"):
        Schedule.from_config([{"until": 0.5}, {"until": 0.5}])
    with pytest.raises(ValueError, match="reach until: 1.0"):
        Schedule.from_config([{"until": 0.5}])
    with pytest.raises(ValueError, match="unknown compression keys"):
        Schedule.from_config([{"until": 1.0, "keep": 0.5}])
    with pytest.raises(ValueError, match="keep ratios"):
        Setting.from_dict({"keep_online": 0.0})


def test_lr_and_momentum_schedules():
    assert warmup_then_decay(5, 100, 10, 1.0) == pytest.approx(0.5)
    assert warmup_then_decay(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_then_decay(55, 100, 10, 1.0) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_then_decay(55, 100, 10, 1.0, decay="poly") == pytest.approx(0.25)  # (1 - 0.5)^2
    assert warmup_then_decay(100, 100, 10, 1.0, final=0.1) == pytest.approx(0.1)
    assert cosine_ramp(0, 10, 0.99, 1.0) == pytest.approx(0.99) and cosine_ramp(10, 10, 0.99, 1.0) == 1.0
    assert linear_warmup_constant(5, 10, 0.04, 0.07) == pytest.approx(0.055)

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


def _sincos_at(r: float, c: float, dim: int) -> torch.Tensor:
    n = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(n, dtype=torch.float64) / n)
    return torch.cat([(r * omega).sin(), (r * omega).cos(), (c * omega).sin(), (c * omega).cos()]).float()


@pytest.mark.parametrize("patch", [4, 8, 16, 2])
def test_sincos_position_follows_the_image_location_at_every_patch_size(patch):
    """Base patch 8 on 32 px: a token's position is the sin-cos of its centre in base-patch units, whatever
    the patch size (the grid covers the whole image, not the base grid's top-left corner)."""
    m = SeqCompressViT("vit_test", img_size=32, patch_size=8, in_chans=1)
    g = 32 // patch
    pe = m.pos_embed_for(g, g, torch.device("cpu"), torch.float32, patch)[0]
    for i in range(g):
        for j in range(g):
            centre_px = ((i + 0.5) * patch, (j + 0.5) * patch)
            expected = _sincos_at(centre_px[0] / 8 - 0.5, centre_px[1] / 8 - 0.5, m.embed_dim)
            assert torch.allclose(pe[i * g + j], expected, atol=1e-5), (patch, i, j)
    if patch == 16:  # the bottom-right token sits between base tokens (2, 2)..(3, 3), not at base (1, 1)
        base = m.pos_embed_for(4, 4, torch.device("cpu"), torch.float32)[0]
        assert not torch.allclose(pe[3], base[5], atol=1e-3)


def test_learned_position_table_is_resampled_over_the_same_image():
    m = SeqCompressViT("vit_test", img_size=32, patch_size=4, in_chans=1, pos_embed="learn")
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    a, b = torch.randn(m.embed_dim), torch.randn(m.embed_dim)
    with torch.no_grad():  # a table affine in the base token's row and column
        m.pos_embed.copy_((rows.flatten()[:, None] * a + cols.flatten()[:, None] * b)[None])
    pe = m.pos_embed_for(4, 4, torch.device("cpu"), torch.float32, 8)[0]
    base = m.pos_embed[0].reshape(8, 8, -1)
    for i in range(4):
        for j in range(4):
            # patch 8 covers base tokens (2i..2i+1, 2j..2j+1): their mean, i.e. the table at the centre
            assert torch.allclose(pe[i * 4 + j], base[2 * i:2 * i + 2, 2 * j:2 * j + 2].mean((0, 1)), atol=1e-5)
            assert torch.allclose(pe[i * 4 + j], (2 * i + 0.5) * a + (2 * j + 0.5) * b, atol=1e-4)
    assert m.pos_embed_for(8, 8, torch.device("cpu"), torch.float32, 4) is m.pos_embed


def test_no_host_copy_in_forward_noise_on_device_and_cached_table():
    m = SeqCompressViT("vit_test", img_size=32, patch_size=8, in_chans=1)
    t1 = m.pos_embed_for(2, 2, torch.device("cpu"), torch.float32, 16)
    assert m.pos_embed_for(2, 2, torch.device("cpu"), torch.float32, 16) is t1  # cached, built once
    x = torch.randn(3, 16, 5)
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(0))
    a = token_dropout(x, 0.25, noise)
    b = token_dropout(x, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)  # precomputed noise == the same generator's draw
    with pytest.raises(ValueError, match="noise of shape"):
        token_dropout(x, 0.25, noise[:, :8])


def test_stages_validated_when_the_config_is_read(tmp_path):
    from shared.config import load_config
    from projects.accel_ssl.train import main, validate

    base = [f"run.root={tmp_path}", "run.name=v"]
    cfg = lambda s: load_config("projects/accel_ssl/configs/demo_mocov3.yaml", [*base, f"compression.schedule={s}"])
    assert validate(cfg("[{until: 0.5, patch: 8}, {until: 1.0}]")).at(0.1).patch == 8
    for sched, msg in (("[{until: 1.0, patch: 12}]", "does not divide"), ("[{until: 1.0, patch: 0}]", "positive"),
                       ("[{until: 1.0, keep_online: 1.5}]", "keep ratios"), ("[{until: 1.0, keep_target: 0}]", "keep ratios")):
        with pytest.raises(ValueError, match=msg):
            main(cfg(sched))
        assert not (tmp_path / "accel_ssl" / "v").exists()  # refused before the run folder is made
    dino = load_config("projects/accel_ssl/configs/demo_dino.yaml", [*base, "compression.schedule=[{until: 1.0, patch: 32}]"])
    with pytest.raises(ValueError, match=r"\[16\]"):  # the 16 px local crops
        validate(dino)

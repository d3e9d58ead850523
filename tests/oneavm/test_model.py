import pytest
import torch

from projects.oneavm.frontend import encoder_spectrogram, front_end
from projects.oneavm.model import build_model
from projects.oneavm.objective import JointObjective, mix_images, rolled, separation_validity
from projects.oneavm.train import check_config
from tests.oneavm.conftest import tiny_cfg

pytestmark = pytest.mark.timeout(90)

GROUPS = {"imgnet": "image", "img_proj": "loc", "audnet": "audio", "aud_proj": "audio",
          "sep_visual": "sep", "unet": "sep", "synth": "sep"}


def _batch(cfg, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 3, cfg.data.image_size, cfg.data.image_size, generator=g)
    wave = 0.3 * torch.randn(b, cfg.data.audio.n_samples, generator=g)
    return image, wave


def _grads(cfg, w_loc, w_sep, w_mix, step=0):
    cfg.loss.w_loc, cfg.loss.w_sep, cfg.loss.w_mix = w_loc, w_sep, w_mix
    torch.manual_seed(0)
    model = build_model(cfg)
    obj = JointObjective(model, cfg).train()
    image, wave = _batch(cfg)
    out = obj(image, wave, torch.ones(4, dtype=torch.bool), 0.5, step)
    out["loss"].backward()
    got = {}
    for name, p in model.named_parameters():
        got.setdefault(name.split(".")[0], []).append(p.grad is not None and bool(p.grad.abs().sum() > 0))
    return {k: any(v) for k, v in got.items()}, out


def test_shapes_and_front_end(tmp_path):
    cfg = tiny_cfg(tmp_path, tmp_path)
    check_config(cfg)
    model = build_model(cfg).eval()
    image, wave = _batch(cfg)
    fe = front_end(cfg)
    spec = encoder_spectrogram(fe, wave, cfg.data.audio.encoder_scale)
    assert spec.shape == (4, 1, 32, 64)
    with torch.no_grad():
        assert model.encode_image(image).shape == (4, 32, 2, 2)
        aud = model.encode_audio(spec)
        assert aud.shape == (4, 32) and torch.allclose(aud.norm(dim=1), torch.ones(4))
        sound = model.sound_features(spec[:, 0])
        assert sound.shape == (4, 8, 32, 64)
        vis = model.separation_visual(model.image_trunk(image))
        assert vis.shape == (4, 8) and bool(((vis >= 0) & (vis <= 1)).all())
        assert model.mask_logits(vis, sound).shape == (4, 32, 64)


def test_each_objective_reaches_exactly_its_parameters(tmp_path):
    cfg = tiny_cfg(tmp_path, tmp_path)
    loc, out = _grads(cfg, 1.0, 0.0, 0.0)
    assert set(out) == {"loss", "loss/loc"}
    assert loc == {"imgnet": True, "img_proj": True, "audnet": True, "aud_proj": True,
                   "sep_visual": False, "unet": False, "synth": False}
    mix, out = _grads(cfg, 0.0, 0.0, 1.0)  # mix.detach_audio (default): the visual side only
    assert set(out) == {"loss", "loss/mix"}
    assert mix == {**loc, "audnet": False, "aud_proj": False}
    sep, out = _grads(cfg, 0.0, 1.0, 0.0)
    assert set(out) == {"loss", "loss/sep"}
    assert sep == {"imgnet": True, "img_proj": False, "audnet": False, "aud_proj": False,
                   "sep_visual": True, "unet": True, "synth": True}
    both, out = _grads(cfg, 1.0, 1.0, 1.0)
    assert all(both.values()) and set(out) == {"loss", "loss/loc", "loss/sep", "loss/mix"}
    assert out["loss"].item() == pytest.approx((out["loss/loc"] + out["loss/sep"] + out["loss/mix"]).item(), rel=1e-5)


def test_image_mixing_start_and_audio_variants(tmp_path):
    """mix.start_step: no image-mixing loss before that step, the full one from it on; mix.detach_audio=false:
    the image-mixing loss (same value) reaches the audio encoder too."""
    cfg = tiny_cfg(tmp_path, tmp_path)
    cfg.mix.start_step = 3
    _, before = _grads(cfg, 1.0, 0.0, 1.0, step=2)
    _, after = _grads(cfg, 1.0, 0.0, 1.0, step=3)
    assert set(before) == {"loss", "loss/loc"} and set(after) == {"loss", "loss/loc", "loss/mix"}
    assert before["loss/loc"].item() == pytest.approx(after["loss/loc"].item(), rel=1e-6)
    cfg.mix.start_step = 0
    visual_only, out = _grads(cfg, 0.0, 0.0, 1.0)
    cfg.mix.detach_audio = False
    joint, out_joint = _grads(cfg, 0.0, 0.0, 1.0)
    assert visual_only == {"imgnet": True, "img_proj": True, "audnet": False, "aud_proj": False,
                           "sep_visual": False, "unet": False, "synth": False}
    assert joint == {**visual_only, "audnet": True, "aud_proj": True}
    assert out["loss/mix"].item() == pytest.approx(out_joint["loss/mix"].item(), rel=1e-6)


def test_bad_mixtures_are_left_out_and_reported():
    wave = torch.randn(4, 100)
    wave[2] = 0.0  # silent clip: mixtures 1 (with partner 2) and 2 are invalid
    ok = separation_validity(wave, ["a", "b", "c", "d"], 2)
    assert ok.tolist() == [True, False, False, True]
    # a clip mixed with itself (same audio in the batch twice)
    ok = separation_validity(torch.randn(3, 100), ["a", "a", "b"], 2)
    assert ok.tolist() == [False, True, True]


def test_image_mixing_forms():
    """blend: the lam-weighted sum; mosaic: each frame at half size in one quadrant, its partner in the
    opposite one, zeros elsewhere, the arrangement cycling with (i + step) % 4."""
    img = torch.stack([torch.full((3, 4, 4), float(v)) for v in (1, 2, 3)])
    partner = rolled(3, 1, "cpu")
    assert torch.equal(mix_images(img, partner, 0.25, "blend", 0)[0], torch.full((3, 4, 4), 0.25 * 1 + 0.75 * 2))
    m = mix_images(img, partner, 0.25, "mosaic", 0)[:, 0]
    q = lambda x: [[float(x[r:r + 2, c:c + 2].mean()) for c in (0, 2)] for r in (0, 2)]  # noqa: E731
    assert q(m[0]) == [[1, 0], [0, 2]]                       # k = 0: self top-left, partner bottom-right
    assert q(m[1]) == [[0, 2], [3, 0]]                       # k = 1: self top-right, partner bottom-left
    assert q(m[2]) == [[1, 0], [0, 3]]                       # k = 2: self bottom-right, partner top-left
    assert q(mix_images(img, partner, 0.25, "mosaic", 3)[0, 0]) == [[0, 2], [1, 0]]  # k = 3
    # the quadrant holds the whole frame at half size (antialiased bilinear), not a crop of it
    ramp = torch.arange(16.0).view(1, 1, 4, 4).expand(2, 3, 4, 4).contiguous()
    half = mix_images(ramp, rolled(2, 1, "cpu"), 0.5, "mosaic", 0)[0, 0, :2, :2]
    small = torch.nn.functional.interpolate(ramp[:1], size=(2, 2), mode="bilinear", antialias=True)[0, 0]
    assert torch.allclose(half, small) and float(half.mean()) == pytest.approx(7.5)
    assert half[1, 1] > 10 > 5 > half[0, 0]


def test_config_errors(tmp_path):
    cfg = tiny_cfg(tmp_path, tmp_path, "loss.w_loc=0.0", "loss.w_sep=0.0", "loss.w_mix=0.0")
    with pytest.raises(ValueError, match="at least one positive"):
        check_config(cfg)
    with pytest.raises(ValueError, match="divisible"):
        check_config(tiny_cfg(tmp_path, tmp_path, "model.unet_levels=6"))
    with pytest.raises(ValueError, match="sep.mask"):
        check_config(tiny_cfg(tmp_path, tmp_path, "sep.mask=soft"))
    with pytest.raises(ValueError, match="mix.form"):
        check_config(tiny_cfg(tmp_path, tmp_path, "mix.form=cutmix"))

import numpy as np
import pytest
import torch

from shared.data.separation import (SeparationFrontEnd, ideal_masks, log_magnitude_image, loss_weight,
                                    mix_sources, warp_grid)
from shared.metrics.separation import SeparationMeter, separation_scores

pytestmark = pytest.mark.timeout(60)


def _two_tones(sr=8000, n=8000, seed=0):
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    a = 0.5 * np.sin(2 * np.pi * 330 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    b = 0.3 * np.sign(np.sin(2 * np.pi * 1700 * t)) * np.exp(-((t % 0.25) * 8)) + 0.01 * rng.standard_normal(n)
    return torch.tensor(np.stack([a, b]), dtype=torch.float32)


def test_mix_divides_by_n_and_sums():
    w = torch.randn(3, 2, 100)
    mix, src = mix_sources(w)
    assert torch.allclose(mix, w.sum(0) / 3) and torch.allclose(src.sum(0), mix)
    with pytest.raises(ValueError):
        mix_sources(torch.randn(1, 100))


def test_warp_grid_matches_formula_and_inverts():
    g = warp_grid(5, 3)
    y = torch.linspace(-1, 1, 5, dtype=torch.float64)
    assert torch.allclose(g[0, :, 0, 1].double(), (21 ** ((y + 1) / 2) - 11) / 10, atol=1e-6)
    assert g[0, 0, 0, 1] == pytest.approx(-1) and g[0, -1, 0, 1] == pytest.approx(1)
    back = warp_grid(5, 3, warp=False)[0, :, 0, 1].double()
    assert torch.allclose((21 ** ((back + 1) / 2) - 11) / 10, y, atol=1e-6)  # unwarp is the inverse map


def test_masks_and_weight_hand_values():
    mags = torch.tensor([[[1.0, 3.0]], [[3.0, 1.0]]])
    mix = torch.tensor([[4.0, 4.0]])
    assert ideal_masks(mags, mix, "binary").tolist() == [[[0.0, 1.0]], [[1.0, 0.0]]]
    assert torch.allclose(ideal_masks(mags, mix, "ratio"), mags / 4)
    assert ideal_masks(torch.tensor([10.0]), torch.tensor([1.0]), "ratio").item() == 5.0
    assert loss_weight(torch.tensor([0.0, 1.0, 1e6])).tolist() == pytest.approx([1e-3, np.log(2), 10.0])
    with pytest.raises(ValueError):
        ideal_masks(mags, mix, "soft")


@pytest.mark.parametrize("log_freq", [False, True])
@pytest.mark.parametrize("mask_type", ["ratio", "binary"])
def test_ideal_mask_round_trip_reaches_high_sdr(log_freq, mask_type):
    fe = SeparationFrontEnd(n_fft=510, hop=128, log_freq=log_freq, n_freq_out=256)
    waves = _two_tones()
    t = fe.targets(waves.unsqueeze(1), mask_type)  # (N=2, B=1, L)
    assert t["gt_masks"].shape == (2, 1, fe.n_freq_out, fe.n_frames(waves.shape[-1]))
    est = fe.reconstruct(t["spec_mix"], t["gt_masks"], mask_type, length=waves.shape[-1])
    s = separation_scores(t["sources"][:, 0].numpy(), est[:, 0].numpy(), t["mix"][0].numpy())
    # an oracle mask must separate far better than the mixture itself
    floor = {"ratio": 15.0, "binary": 10.0}[mask_type] - (4.0 if log_freq else 0.0)
    assert s["sdr_mean"] > floor and s["sdr_mean"] > s["sdr_mix_mean"] + 8


def test_full_mask_returns_the_mixture():
    fe = SeparationFrontEnd(n_fft=254, hop=64, log_freq=False)
    w = _two_tones(n=4000)
    mix = w.sum(0)
    out = fe.reconstruct(fe.stft(mix), torch.ones(fe.n_freq, fe.n_frames(4000)), "ratio", length=4000)
    assert torch.allclose(out, mix, atol=1e-4)


def test_wrapper_equals_mir_eval_without_permutation():
    from mir_eval.separation import bss_eval_sources

    rng = np.random.default_rng(0)
    refs = rng.standard_normal((2, 4000))
    # estimates given in swapped order: compute_permutation=False must NOT undo the swap
    ests = np.stack([refs[1] + 0.1 * rng.standard_normal(4000), refs[0] + 0.1 * rng.standard_normal(4000)])
    sdr, sir, sar, perm = bss_eval_sources(refs, ests, compute_permutation=False)
    s = separation_scores(refs, ests, refs.sum(0))
    assert np.allclose(s["sdr"], sdr) and np.allclose(s["sir"], sir) and np.allclose(s["sar"], sar)
    assert s["sdr_mean"] < 0  # swapped estimates score badly
    s2 = separation_scores(refs, ests[::-1])
    assert s2["sdr_mean"] > 15 and "sdr_mix" not in s2
    mix_sdr, _, _, _ = bss_eval_sources(refs, np.stack([refs.sum(0)] * 2), compute_permutation=False)
    assert s["sdr_mix_mean"] == pytest.approx(float(np.mean(mix_sdr)))


def test_meter_skips_silent_and_averages_per_mixture():
    rng = np.random.default_rng(1)
    m = SeparationMeter()
    vals = []
    for i in range(2):
        refs = rng.standard_normal((2, 3000))
        ests = refs + (0.1 + 0.2 * i) * rng.standard_normal((2, 3000))
        vals.append(m.update(refs, ests, refs.sum(0), key=f"m{i}"))
    silent = np.stack([rng.standard_normal(3000), np.zeros(3000)])
    assert m.update(silent, silent + 0.1, key="silent") is None
    s = m.summary()
    assert s["n_mixtures"] == 2 and s["n_skipped_silent"] == 1 and m.skipped == ["silent"]
    assert s["sdr"] == pytest.approx(np.mean([v["sdr_mean"] for v in vals]))
    with pytest.raises(ValueError):
        SeparationMeter().summary()


def test_spectrogram_image():
    img = log_magnitude_image(torch.rand(10, 7) + 0.1)
    assert img.shape == (10, 7) and img.dtype == np.uint8 and img.max() == 255

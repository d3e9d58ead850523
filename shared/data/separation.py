"""Mix-and-separate front end, as Sound-of-Pixels (Zhao et al., ECCV 2018) computes it.

    fe = SeparationFrontEnd(n_fft=1022, hop=256, log_freq=True, n_freq_out=256)
    mix, sources = mix_sources(waves)                      # waves (N, B, L): sum of waves / N
    spec_mix = fe.stft(mix)                                # complex (B, F, T)
    mag_mix = fe.warp(spec_mix.abs())                      # (B, n_freq_out, T) on the log-frequency grid
    mags = fe.warp(fe.stft(sources).abs())                 # (N, B, n_freq_out, T)
    gt = ideal_masks(mags, mag_mix, "binary")              # targets; weight = loss_weight(mag_mix)
    wave_hat = fe.reconstruct(spec_mix, pred_mask)         # mask back to the linear grid, mixture phase, iSTFT

Facts from the Sound-of-Pixels code (read, not copied): each waveform is divided by the number of
sources before summing; librosa's STFT (Hann window, centred frames); the log-frequency warp is a
``grid_sample`` of the magnitude with rows at input positions ``(21^((y+1)/2) - 11) / 10`` for
output rows ``y`` in [-1, 1] (and the inverse map to unwarp); the ground-truth masks are computed
after the warp: binary ``mag_n > 0.5 * mag_mix``, ratio ``mag_n / mag_mix`` clamped to [0, 5]; the
loss weight is ``log1p(mag_mix)`` clamped to [1e-3, 10]; 1e-10 is added to the mixture magnitude
before the warp; the network input is ``log(mag_mix)``; predicted masks are unwarped to the linear
grid, binarised at 0.5 for binary masks, multiplied with the mixture magnitude and inverted with
the mixture's phase. ``grid_sample`` uses ``align_corners=True`` (the behaviour of the PyTorch
version Sound-of-Pixels was written for).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MASK_TYPES = ("binary", "ratio")
EPS_MAG = 1e-10


def mix_sources(waves: torch.Tensor, divide: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, ..., L) source waveforms -> (mixture (..., L), the sources as mixed (N, ..., L)).

    With ``divide`` (Sound-of-Pixels) every source is scaled by 1/N first, so the sources returned
    are the scaled ones and they sum exactly to the mixture."""
    waves = torch.as_tensor(waves)
    if waves.dim() < 2 or waves.shape[0] < 2:
        raise ValueError(f"mix_sources needs (N >= 2, ..., L) waveforms, got shape {tuple(waves.shape)}")
    if divide:
        waves = waves / waves.shape[0]
    return waves.sum(0), waves


def warp_grid(n_out: int, n_frames: int, warp: bool = True, device=None) -> torch.Tensor:
    """The (1, n_out, n_frames, 2) sampling grid of ``grid_sample``: x spans the frames; y maps output
    rows to input rows on a log scale (``warp``) or back (``warp=False``)."""
    x = torch.linspace(-1, 1, n_frames, dtype=torch.float64)
    y = torch.linspace(-1, 1, n_out, dtype=torch.float64)
    yv, xv = torch.meshgrid(y, x, indexing="ij")
    if warp:
        gy = (torch.pow(torch.tensor(21.0, dtype=torch.float64), (yv + 1) / 2) - 11) / 10
    else:
        gy = torch.log(yv * 10 + 11) / math.log(21) * 2 - 1
    return torch.stack([xv, gy], -1).unsqueeze(0).float().to(device)


def _resample_rows(x: torch.Tensor, n_out: int, warp: bool) -> torch.Tensor:
    """grid_sample over the last two axes (F, T) of any (..., F, T) real tensor."""
    lead, (f, t) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape(-1, 1, f, t)
    grid = warp_grid(n_out, t, warp, x.device).to(flat.dtype).expand(flat.shape[0], -1, -1, -1)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(*lead, n_out, t)


def ideal_masks(mags: torch.Tensor, mag_mix: torch.Tensor, mask_type: str = "binary") -> torch.Tensor:
    """Ground-truth masks of the sources ``mags`` (N, ...) against ``mag_mix`` (...) (Sound-of-Pixels:
    binary ``mag_n > 0.5 * mag_mix``; ratio ``mag_n / mag_mix`` clamped to [0, 5])."""
    if mask_type == "binary":
        return (mags > 0.5 * mag_mix).to(mags.dtype)
    if mask_type == "ratio":
        return (mags / mag_mix).clamp(0.0, 5.0)
    raise ValueError(f"mask type must be one of {MASK_TYPES}, got {mask_type!r}")


def loss_weight(mag_mix: torch.Tensor, weighted: bool = True) -> torch.Tensor:
    """Per-bin loss weight: ``log1p(mag_mix)`` clamped to [1e-3, 10] (ones when not ``weighted``)."""
    return torch.log1p(mag_mix).clamp(1e-3, 10.0) if weighted else torch.ones_like(mag_mix)


class SeparationFrontEnd:
    """STFT, log-frequency warp and inverse STFT with the mixture's phase; all in torch so the front
    end runs on the training device. ``n_freq_out`` is the number of rows of the warped grid
    (Sound-of-Pixels: 256 for a 1022-point STFT); with ``log_freq=False`` the linear grid is kept."""

    def __init__(self, n_fft: int = 1022, hop: int = 256, log_freq: bool = True, n_freq_out: int = 256,
                 center: bool = True):
        if n_fft <= 0 or hop <= 0 or hop > n_fft:
            raise ValueError(f"need 0 < hop <= n_fft, got n_fft={n_fft}, hop={hop}")
        self.n_fft, self.hop, self.log_freq, self.center = int(n_fft), int(hop), bool(log_freq), bool(center)
        self.n_freq = self.n_fft // 2 + 1
        self.n_freq_out = int(n_freq_out) if self.log_freq else self.n_freq

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop if self.center else 1 + (n_samples - self.n_fft) // self.hop

    def _window(self, device, dtype) -> torch.Tensor:
        return torch.hann_window(self.n_fft, device=device, dtype=dtype)

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        """(..., L) real -> complex (..., n_freq, frames)."""
        wave = torch.as_tensor(wave)
        lead, n = wave.shape[:-1], wave.shape[-1]
        if n < self.n_fft // 2 + 1:
            raise ValueError(f"a clip of {n} samples is shorter than half an STFT window ({self.n_fft})")
        flat = wave.reshape(-1, n).float()
        spec = torch.stft(flat, self.n_fft, self.hop, window=self._window(flat.device, flat.dtype),
                          center=self.center, pad_mode="constant", return_complex=True)
        return spec.reshape(*lead, *spec.shape[-2:])

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        lead = spec.shape[:-2]
        flat = spec.reshape(-1, *spec.shape[-2:])
        wave = torch.istft(flat, self.n_fft, self.hop, window=self._window(flat.device, flat.real.dtype),
                           center=self.center, length=length)
        return wave.reshape(*lead, length)

    def warp(self, mag: torch.Tensor) -> torch.Tensor:
        """Linear-frequency magnitude (..., n_freq, T) -> the network's grid (..., n_freq_out, T)."""
        if mag.shape[-2] != self.n_freq:
            raise ValueError(f"expected {self.n_freq} frequency rows, got {mag.shape[-2]}")
        return _resample_rows(mag, self.n_freq_out, True) if self.log_freq else mag

    def unwarp(self, x: torch.Tensor) -> torch.Tensor:
        """A mask on the network's grid (..., n_freq_out, T) -> the linear grid (..., n_freq, T)."""
        return _resample_rows(x, self.n_freq, False) if self.log_freq else x

    def mixture_input(self, mag_mix_linear: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(warped mixture magnitude + 1e-10, its log: the separation network's input)."""
        mag = self.warp(mag_mix_linear + EPS_MAG)
        return mag, torch.log(mag.clamp_min(EPS_MAG))

    def targets(self, waves: torch.Tensor, mask_type: str = "binary", weighted: bool = True,
                divide: bool = True) -> dict:
        """Everything mix-and-separate needs from (N, B, L) source waveforms: the mixture, its complex
        STFT, the warped mixture magnitude and log magnitude, the ground-truth masks (N, B, F', T) and
        the loss weight (B, F', T)."""
        mix, sources = mix_sources(waves, divide)
        spec_mix = self.stft(mix)
        mag_mix, log_mag_mix = self.mixture_input(spec_mix.abs())
        mags = self.warp(self.stft(sources).abs())
        return {"mix": mix, "sources": sources, "spec_mix": spec_mix, "mag_mix": mag_mix,
                "log_mag_mix": log_mag_mix, "gt_masks": ideal_masks(mags, mag_mix, mask_type),
                "weight": loss_weight(mag_mix, weighted)}

    def reconstruct(self, spec_mix: torch.Tensor, mask: torch.Tensor, mask_type: str = "binary",
                    threshold: float = 0.5, length: int | None = None) -> torch.Tensor:
        """Waveform of a source: the mask (..., F', T) on the network's grid is unwarped, binarised at
        ``threshold`` for binary masks, multiplied with the mixture magnitude and inverted with the
        mixture's phase. ``spec_mix`` (..., n_freq, T) complex; ``mask`` broadcasts against it."""
        lin = self.unwarp(mask.float())
        if mask_type == "binary":
            lin = (lin > threshold).float()
        elif mask_type != "ratio":
            raise ValueError(f"mask type must be one of {MASK_TYPES}, got {mask_type!r}")
        mag, phase = spec_mix.abs(), torch.angle(spec_mix)
        est = torch.polar(mag * lin, phase.expand_as(lin) if phase.shape != lin.shape else phase)
        if length is None:
            length = (spec_mix.shape[-1] - 1) * self.hop
        return self.istft(est, length)


def log_magnitude_image(mag: np.ndarray | torch.Tensor, floor_db: float = -80.0) -> np.ndarray:
    """A (F, T) magnitude as an 8-bit image (low frequencies at the bottom), in dB relative to its peak."""
    m = np.asarray(torch.as_tensor(mag).detach().float().cpu())
    db = 20 * np.log10(np.maximum(m, 1e-10) / max(float(m.max()), 1e-10))
    img = np.clip((db - floor_db) / -floor_db, 0, 1)[::-1]
    return (img * 255).astype(np.uint8)

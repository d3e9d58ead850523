"""The audio front end shared by training and evaluation: the STFT / log-frequency grid of ``data.audio``
(the separation targets and reconstruction) and the audio encoder's log-power input on that grid."""
from __future__ import annotations

import torch

from shared.data.separation import SeparationFrontEnd


def front_end(cfg) -> SeparationFrontEnd:
    a = cfg.data.audio
    return SeparationFrontEnd(a.n_fft, a.hop, a.log_freq, a.n_freq_out)


def encoder_spectrogram(fe: SeparationFrontEnd, wave: torch.Tensor, scale: float) -> torch.Tensor:
    """The audio encoder's input: log power on the separation grid, log(|X|^2 + 1e-7) / scale, (B, 1, F', T)."""
    mag = fe.warp(fe.stft(wave).abs())
    return (torch.log(mag ** 2 + 1e-7) / scale).unsqueeze(1)

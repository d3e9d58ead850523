"""The spectrograms the papers use: a scipy-style linear log-power STFT (EZ-VSL and its line),
log-mel (torchaudio) and Kaldi fbank (AST/AudioMAE-style models)."""
from __future__ import annotations

import numpy as np
import torch
import torchaudio
from scipy import signal


def linear_log_spectrogram(wave: np.ndarray, sample_rate: int, nperseg: int = 512, noverlap: int = 274,
                           eps: float = 1e-7) -> np.ndarray:
    """``log(|STFT|^2 + eps)`` exactly as ``scipy.signal.spectrogram`` defaults compute it
    (Tukey(0.25) window, PSD scaling, constant detrend): shape (nperseg//2+1, frames)."""
    _, _, spec = signal.spectrogram(wave, sample_rate, nperseg=nperseg, noverlap=noverlap)
    return np.log(spec + eps).astype(np.float32)


def log_mel_spectrogram(wave: torch.Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 160,
                        win_length: int | None = None, n_mels: int = 128, f_min: float = 0.0,
                        f_max: float | None = None, eps: float = 1e-6) -> torch.Tensor:
    """``log(mel power + eps)``: (n_mels, frames) for a 1-D wave, (..., n_mels, frames) for a batch."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                                               win_length=win_length, n_mels=n_mels, f_min=f_min, f_max=f_max,
                                               power=2.0)
    return torch.log(mel(wave) + eps)


def kaldi_fbank(wave: torch.Tensor, sample_rate: int, num_mel_bins: int = 128, frame_shift_ms: float = 10.0,
                target_frames: int | None = None) -> torch.Tensor:
    """Kaldi-compatible log-mel filter banks (frames, bins) as AST/AudioMAE compute them: hanning window,
    no dither, mean removed from the wave; padded or cut to ``target_frames``."""
    wave = torch.as_tensor(wave, dtype=torch.float32).reshape(1, -1)
    wave = wave - wave.mean()
    fb = torchaudio.compliance.kaldi.fbank(wave, htk_compat=True, sample_frequency=sample_rate, use_energy=False,
                                           window_type="hanning", num_mel_bins=num_mel_bins, dither=0.0,
                                           frame_shift=frame_shift_ms)
    if target_frames is not None:
        n = fb.shape[0]
        if n < target_frames:
            fb = torch.nn.functional.pad(fb, (0, 0, 0, target_frames - n))
        fb = fb[:target_frames]
    return fb

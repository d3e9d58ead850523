"""Audio decoding to float32 at a requested rate.

wav/flac/ogg go through soundfile; anything else (the audio track of an mp4, m4a, ...) through
PyAV. torchaudio is used for resampling only: its load/save now need torchcodec.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SOUNDFILE_EXT = {".wav", ".flac", ".ogg", ".oga"}


class MediaError(RuntimeError):
    """An unreadable or malformed media file; the message names the path."""


def _decode_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            sr = stream.codec_context.sample_rate or stream.rate
            chunks = []
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if arr.dtype.kind == "i":
                    arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
                arr = arr.astype(np.float32)
                if frame.format.is_planar:
                    arr = arr.reshape(len(frame.layout.channels), -1)
                else:
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                chunks.append(arr)
    except MediaError:
        raise
    except Exception as e:  # av.error.* and friends
        raise MediaError(f"{path}: cannot decode audio ({type(e).__name__}: {e})") from e
    if not chunks:
        raise MediaError(f"{path}: audio stream holds no samples")
    return np.concatenate(chunks, axis=1), int(sr)


def load_audio(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode a file to float32 ``(channels, samples)`` (``(samples,)`` when mono) at ``sample_rate``
    (native rate when None). Raises FileNotFoundError or MediaError with the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.suffix.lower() in SOUNDFILE_EXT:
        try:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:
            raise MediaError(f"{path}: cannot decode audio ({type(e).__name__}: {e})") from e
        wave = data.T
    else:
        wave, sr = _decode_pyav(path)
    if wave.shape[1] == 0:
        raise MediaError(f"{path}: audio holds no samples")
    if mono:
        wave = np.clip(wave, -1.0, 1.0).mean(0)
    if sample_rate is not None and sr != sample_rate:
        wave = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), sr, sample_rate).numpy()
        sr = sample_rate
    return np.ascontiguousarray(wave, dtype=np.float32), sr


def center_crop_or_tile(wave: np.ndarray, length: int) -> np.ndarray:
    """``length`` samples from the middle of ``wave`` (last axis); a shorter clip is tiled first."""
    n = wave.shape[-1]
    if n < length:
        reps = length // n + 1
        return np.tile(wave, (1,) * (wave.ndim - 1) + (reps,))[..., :length]
    start = (n - length) // 2
    return wave[..., start:start + length]


def load_audio_clip(path: str | os.PathLike, duration: float, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """A mono clip of ``duration`` seconds centred on the file's middle, tiled if the file is shorter."""
    wave, sr = load_audio(path, sample_rate=sample_rate, mono=True)
    return center_crop_or_tile(wave, int(round(sr * duration))), sr


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(wave, dtype=np.float32).T, sample_rate, subtype="PCM_16")

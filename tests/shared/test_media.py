import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import signal

from shared.data.audio import MediaError, center_crop_or_tile, load_audio, load_clip, write_wav
from shared.data.images import load_image
from shared.data.spectrogram import kaldi_fbank, linear_log_spectrogram, log_mel_spectrogram
from shared.data.video import read_frames, video_info, write_video

SR = 16000


def tone(freq=440.0, dur=1.0, sr=SR):
    t = np.arange(int(dur * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("ext,subtype", [(".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS")])
def test_audio_formats_decode_to_mono_float(tmp_path, ext, subtype):
    stereo = np.stack([tone(440), tone(440) * 0.5], axis=1)
    path = tmp_path / f"a{ext}"
    sf.write(str(path), stereo, SR, subtype=subtype)
    wave, sr = load_audio(path)
    assert sr == SR and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - SR) < 1100  # vorbis may pad a little
    ref = stereo.mean(1)[: len(wave)]
    tol = 0.05 if ext == ".ogg" else 1e-3
    assert np.sqrt(np.mean((wave[:SR // 2] - ref[:SR // 2]) ** 2)) < tol


def test_resample_keeps_the_pitch(tmp_path):
    write_wav(tmp_path / "a.wav", tone(1000.0, 1.0, 44100), 44100)
    wave, sr = load_audio(tmp_path / "a.wav", sample_rate=SR)
    assert sr == SR and abs(len(wave) - SR) <= 1
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * SR / len(wave) - 1000.0) < 2.0


def test_mp4_audio_track_and_frames(tmp_path):
    frames = np.zeros((10, 64, 80, 3), dtype=np.uint8)
    for i in range(10):
        frames[i, :, : 8 * (i + 1)] = 255  # a bar that grows each frame
    path = tmp_path / "v.mp4"
    write_video(path, frames, fps=10, audio=tone(440.0, 1.0), sample_rate=SR)
    info = video_info(path)
    assert info["has_audio"] and (info["width"], info["height"]) == (80, 64) and abs(info["fps"] - 10) < 1e-6
    wave, sr = load_audio(path, sample_rate=SR)
    assert sr == SR and 0.9 * SR < len(wave) < 1.2 * SR
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * SR / len(wave) - 440.0) < 5.0
    got = read_frames(path)
    assert got.shape == (10, 64, 80, 3)
    at = read_frames(path, times=[0.0, 0.45])  # frame shown at 0.45 s is frame 4: 40 bright columns
    assert (at[1][32, :36] > 200).all() and (at[1][32, 44:] < 60).all()


def test_corrupt_and_missing_media_raise_clear_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(MediaError, match="bad.wav"):
        load_audio(bad)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    with pytest.raises(MediaError, match="bad.mp4"):
        load_audio(tmp_path / "bad.mp4")
    with pytest.raises(MediaError, match="bad.mp4"):
        read_frames(tmp_path / "bad.mp4")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(MediaError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg")


def test_center_crop_and_tiling():
    x = np.arange(10, dtype=np.float32)
    assert center_crop_or_tile(x, 4).tolist() == [3, 4, 5, 6]
    assert center_crop_or_tile(np.arange(3, dtype=np.float32), 7).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_load_clip_three_seconds(tmp_path):
    write_wav(tmp_path / "long.wav", tone(dur=10.0), SR)
    write_wav(tmp_path / "short.wav", tone(dur=1.0), SR)
    for name in ("long.wav", "short.wav"):
        clip, sr = load_clip(tmp_path / name, 3.0)
        assert clip.shape == (3 * SR,)


def test_linear_spectrogram_matches_ezvsl_definition():
    wave = np.random.default_rng(0).normal(size=3 * SR).astype(np.float32) * 0.1
    spec = linear_log_spectrogram(wave, SR)
    assert spec.shape == (257, 200)  # EZ-VSL's 1 x 257 x 200 input at 16 kHz
    _, _, ref = signal.spectrogram(wave, SR, nperseg=512, noverlap=274)
    np.testing.assert_allclose(spec, np.log(ref + 1e-7), rtol=1e-5, atol=1e-5)


def test_log_mel_and_fbank_shapes():
    wave = torch.from_numpy(tone(dur=1.0))
    mel = log_mel_spectrogram(wave, SR, n_fft=400, hop_length=160, n_mels=64)
    assert mel.shape == (64, 101)
    fb = kaldi_fbank(wave, SR, num_mel_bins=128, target_frames=120)
    assert fb.shape == (120, 128) and torch.isfinite(fb).all()
    # the 440 Hz tone's energy sits in the low mel bins
    assert fb[:90].mean(0).argmax() < 40

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import signal

from shared.data.audio import MediaError, center_crop_or_tile, load_audio, load_audio_clip, write_wav
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


def test_load_audio_clip_three_seconds(tmp_path):
    write_wav(tmp_path / "long.wav", tone(dur=10.0), SR)
    write_wav(tmp_path / "short.wav", tone(dur=1.0), SR)
    for name in ("long.wav", "short.wav"):
        clip, sr = load_audio_clip(tmp_path / name, 3.0)
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


def _numbered_video(path, n=150, fps=25, gop=25):
    """Frame i shows i in binary: 8 blocks of 16x16, white for a 1 bit (robust to H.264)."""
    frames = np.zeros((n, 16, 128, 3), dtype=np.uint8)
    for i in range(n):
        for b in range(8):
            if (i >> b) & 1:
                frames[i, :, 16 * b:16 * (b + 1)] = 255
    write_video(path, frames, fps=fps, keyframe_every=gop)


def _numbers(frames):
    bits = frames.reshape(len(frames), 16, 8, 16, 3).mean(axis=(1, 3, 4)) > 128
    return [int(sum(int(v) << b for b, v in enumerate(row))) for row in bits]


class _CountingContainer:
    def __init__(self, c, counter):
        self._c, self._counter = c, counter

    def __getattr__(self, name):
        return getattr(self._c, name)

    def __enter__(self):
        self._c.__enter__()
        return self

    def __exit__(self, *exc):
        return self._c.__exit__(*exc)

    def seek(self, *a, **kw):
        self._counter["seeks"] += 1
        return self._c.seek(*a, **kw)

    def decode(self, *a, **kw):
        for f in self._c.decode(*a, **kw):
            self._counter["frames"] += 1
            yield f


@pytest.fixture
def count_decoding(monkeypatch):
    import av

    counter = {"frames": 0, "seeks": 0}
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **kw: _CountingContainer(real_open(*a, **kw), counter))
    return counter


def test_read_frames_at_times_matches_a_full_decode(tmp_path):
    path = tmp_path / "n.mp4"
    _numbered_video(path)
    assert _numbers(read_frames(path)) == list(range(150))
    times = [5.02, 0.0, 0.039, 0.04, 2.5, 2.5, 5.96, 1.0, 3.3, 100.0, -1.0]
    got = _numbers(read_frames(path, times=times))
    # frame i is shown on [i/25, (i+1)/25); past the end the last frame, before the start the first
    assert got == [125, 0, 0, 1, 62, 62, 149, 25, 82, 149, 0]


def test_read_frames_seeks_instead_of_decoding_the_whole_file(tmp_path, count_decoding):
    path = tmp_path / "n.mp4"
    _numbered_video(path, n=150, gop=25)
    count_decoding["frames"] = count_decoding["seeks"] = 0
    assert _numbers(read_frames(path, times=[5.0])) == [125]
    # one seek back to the keyframe at frame 125, then a few frames (decoder delay), not 126 frames
    assert count_decoding["seeks"] == 1 and count_decoding["frames"] <= 10
    count_decoding["frames"] = count_decoding["seeks"] = 0
    # a clip of 8 consecutive frames from the middle: one seek, decoded forward
    assert _numbers(read_frames(path, times=[3.0 + k / 25 for k in range(8)])) == list(range(75, 83))
    assert count_decoding["seeks"] == 1 and count_decoding["frames"] <= 16
    count_decoding["frames"] = count_decoding["seeks"] = 0
    # two times far apart: two seeks, still far from a full decode
    assert _numbers(read_frames(path, times=[0.5, 5.5])) == [12, 137]
    assert count_decoding["seeks"] == 2 and count_decoding["frames"] < 40


def test_read_frames_rejects_empty_times(tmp_path):
    path = tmp_path / "n.mp4"
    _numbered_video(path, n=10)
    with pytest.raises(ValueError, match="times is empty"):
        read_frames(path, times=[])

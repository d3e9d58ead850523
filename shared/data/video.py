"""Video frames with PyAV (torchvision >= 0.28 has no video decoding)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from shared.data.audio import MediaError


@contextmanager
def _video_stream(path: Path, action: str):
    """(container, first video stream), with missing files and decoder errors reported by path."""
    import av

    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(f"{path}: no video stream")
            yield c, c.streams.video[0]
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"{path}: cannot {action} video ({type(e).__name__}: {e})") from e


def video_info(path: str | os.PathLike) -> dict:
    with _video_stream(Path(path), "open") as (c, s):
        fps = float(s.average_rate or s.guessed_rate or 0)
        duration = float(s.duration * s.time_base) if s.duration else (c.duration or 0) / 1e6
        return {"fps": fps, "duration": duration, "frames": s.frames or int(round(duration * fps)),
                "width": s.codec_context.width, "height": s.codec_context.height, "has_audio": bool(c.streams.audio)}


def read_frames(path: str | os.PathLike, times: list[float] | None = None) -> np.ndarray:
    """RGB frames (N, H, W, 3) uint8: every frame, or the frame shown at each time in ``times`` (s)."""
    path = Path(path)
    with _video_stream(path, "decode") as (c, stream):
        decoded = [(float(f.pts * f.time_base) if f.pts is not None else i / float(stream.average_rate or 1),
                    f.to_ndarray(format="rgb24")) for i, f in enumerate(c.decode(stream))]
    if not decoded:
        raise MediaError(f"{path}: video stream holds no frames")
    if times is None:
        return np.stack([f for _, f in decoded])
    pts = np.array([t for t, _ in decoded])
    out = []
    for t in times:
        shown = np.nonzero(pts <= t + 1e-6)[0]
        out.append(decoded[shown[-1] if len(shown) else 0][1])
    return np.stack(out)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, audio: np.ndarray | None = None,
                sample_rate: int = 16000) -> None:
    """Write (N, H, W, 3) uint8 frames as H.264 mp4, with an optional mono float audio track (AAC)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as c:
        vs = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        a_s = None
        if audio is not None:
            a_s = c.add_stream("aac", rate=sample_rate)
            a_s.layout = "mono"
        for f in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(packet)
        for packet in vs.encode():
            c.mux(packet)
        if a_s is not None:
            samples = np.asarray(audio, dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate = sample_rate
            for packet in a_s.encode(frame):
                c.mux(packet)
            for packet in a_s.encode():
                c.mux(packet)

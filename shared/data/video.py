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


def _frame_time(frame, stream) -> float | None:
    pts = frame.pts if frame.pts is not None else frame.dts
    return None if pts is None else float(pts * stream.time_base)


def read_frames(path: str | os.PathLike, times: list[float] | None = None) -> np.ndarray:
    """RGB frames (N, H, W, 3) uint8: every frame, or the frame shown at each time in ``times`` (s).

    With ``times``, the reader seeks: for each requested time (in increasing order) it jumps back to
    the keyframe at or before it and decodes forward to it, so reading one second of a long video
    costs about one keyframe interval, not the whole file. Times close after the previous one are
    reached by decoding on without a new seek. A time before the first frame gives the first frame;
    a time after the last frame gives the last one.
    """
    path = Path(path)
    if times is None:
        with _video_stream(path, "decode") as (c, stream):
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        if not frames:
            raise MediaError(f"{path}: video stream holds no frames")
        return np.stack(frames)
    times = [float(t) for t in times]
    if not times:
        raise ValueError("times is empty: give at least one time, or None for every frame")
    order = sorted(range(len(times)), key=times.__getitem__)
    out: list[np.ndarray | None] = [None] * len(times)
    with _video_stream(path, "decode") as (c, stream):
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        decoder = None
        prev = None           # the last decoded frame at or before the current target: (time, frame)
        ahead = None          # a decoded frame past the previous target, not consumed yet
        for i in order:
            t = times[i]
            # decode on from here if the target is at most ~2 s ahead of what is decoded; else seek
            here = ahead[0] if ahead is not None else (prev[0] if prev is not None else None)
            if decoder is None or here is None or t < (prev[0] if prev is not None else here) or t - here > 2.0:
                c.seek(max(0, int(t / stream.time_base)), stream=stream, backward=True, any_frame=False)
                decoder, prev, ahead = c.decode(stream), None, None
            if ahead is not None:
                if ahead[0] > t + 1e-6 and prev is not None:
                    out[i] = prev[1].to_ndarray(format="rgb24")
                    continue
                prev, ahead = ahead, None
            for frame in decoder:
                ft = _frame_time(frame, stream)
                if ft is None:
                    ft = (prev[0] + 1.0 / fps) if prev is not None else 0.0
                if ft > t + 1e-6:
                    ahead = (ft, frame)
                    if prev is None:  # the seek landed after t (t before the first frame): the first frame
                        prev, ahead = ahead, None
                    break
                prev = (ft, frame)
            if prev is None:
                raise MediaError(f"{path}: no frame decoded at or after {t:.3f} s")
            out[i] = prev[1].to_ndarray(format="rgb24")
    return np.stack(out)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, audio: np.ndarray | None = None,
                sample_rate: int = 16000, keyframe_every: int | None = None) -> None:
    """Write (N, H, W, 3) uint8 frames as H.264 mp4, with an optional mono float audio track (AAC).

    ``keyframe_every``: the GOP length in frames (the encoder's default when None)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as c:
        vs = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        if keyframe_every:
            vs.codec_context.gop_size = int(keyframe_every)
            vs.options = {"g": str(int(keyframe_every)), "keyint_min": str(int(keyframe_every)), "sc_threshold": "0"}
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

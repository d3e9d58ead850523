"""A generated, learnable audio-visual localization set in the official on-disk layouts.

Each frame holds two or three objects of different classes (a shape with a class colour on a
textured background); the audio is the sound of one of them (a class-specific pitch, harmonic
timbre and pulse rhythm, with noise); that object's box is the ground truth. Written as:

    <root>/train/frames/<id>.jpg, <root>/train/audio/<id>.wav      (training pairs, no boxes)
    <root>/test/frames/<id>.jpg,  <root>/test/audio/<id>.wav       (annotated pool: val + test)
    <root>/test/Annotations/<id>.xml   Flickr-SoundNet style: 3 annotators' boxes, 256x256 pixels
    <root>/metadata/demo_train.txt, demo_val.txt (one id a line), demo_test.csv (id,0),
    <root>/metadata/vggss.json         VGG-SS style: [{"file", "class", "bbox": [[x0,y0,x1,y1] in 0..1]}]
    <root>/objects/<class>/<n>.jpg     single objects (ImageFolder), to pretrain the image encoder

Deterministic from the seed. ``python -m shared.data.demo_av --root DIR`` writes it.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from shared.data.audio import write_wav

CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]
HUES = [(230, 60, 50), (60, 110, 230), (60, 190, 80), (235, 200, 40), (170, 70, 200), (40, 200, 210)]
F0 = [196.0, 293.7, 440.0, 659.3, 987.8, 1480.0]          # G3 .. F#6: one pitch per class
PULSE_HZ = [2.0, 3.0, 4.5, 6.0, 8.0, 11.0]                  # amplitude-modulation rhythm
HARMONIC_DECAY = [0.3, 0.9, 0.5, 0.15, 0.7, 0.05]           # timbre: amplitude of harmonic h ~ decay^h
FRAME = 256


def _polygon(kind: str, box: tuple[float, float, float, float], rng: np.random.Generator) -> list:
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    rot = rng.uniform(-0.25, 0.25)

    def ring(n, radii, phase=0.0):
        return [(cx + rx * radii[i % len(radii)] * math.cos(phase + rot + 2 * math.pi * i / n),
                 cy + ry * radii[i % len(radii)] * math.sin(phase + rot + 2 * math.pi * i / n)) for i in range(n)]

    if kind == "square":
        return ring(4, [1.0], math.pi / 4)
    if kind == "triangle":
        return ring(3, [1.0], -math.pi / 2)
    if kind == "star":
        return ring(10, [1.0, 0.45], -math.pi / 2)
    if kind == "cross":
        a = 0.33
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + rx * (px * c - py * s), cy + ry * (px * s + py * c)) for px, py in pts]
    raise ValueError(kind)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    low = rng.uniform(60, 200, size=(4, 4, 3))
    img = Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.BICUBIC)
    noise = rng.normal(0, 18, size=(size, size, 3))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(1))


def draw_object(draw: ImageDraw.ImageDraw, cls: int, box, rng: np.random.Generator) -> None:
    colour = tuple(int(np.clip(c + rng.normal(0, 18), 0, 255)) for c in HUES[cls])
    outline = tuple(max(0, c - 70) for c in colour)
    kind = CLASSES[cls]
    if kind == "circle":
        draw.ellipse(box, fill=colour, outline=outline, width=3)
    elif kind == "ring":
        x0, y0, x1, y1 = box
        w, h = (x1 - x0) * 0.28, (y1 - y0) * 0.28
        draw.ellipse(box, fill=colour, outline=outline, width=3)
        draw.ellipse((x0 + w, y0 + h, x1 - w, y1 - h), fill=tuple(c // 3 for c in colour))
    else:
        draw.polygon(_polygon(kind, box, rng), fill=colour, outline=outline, width=3)


def split_cells(rng: np.random.Generator, n: int) -> list[tuple[float, float, float, float]]:
    """``n`` (2 or 3) non-overlapping cells (x0, y0, x1, y1) in [0, 1] that tile the frame: two halves,
    or a half and two quarters; left/right or, at random, top/bottom."""
    if n == 2:
        cells = [(0, 0, 0.5, 1), (0.5, 0, 1, 1)]
    elif n == 3:
        big = rng.integers(2)
        cells = [(0, 0, 0.5, 1), (0.5, 0, 1, 0.5), (0.5, 0.5, 1, 1)] if big == 0 else \
                [(0.5, 0, 1, 1), (0, 0, 0.5, 0.5), (0, 0.5, 0.5, 1)]
    else:
        raise ValueError(f"a frame splits into 2 or 3 cells, not {n}")
    if rng.random() < 0.5:  # transpose: top/bottom instead of left/right
        cells = [(y0, x0, y1, x1) for x0, y0, x1, y1 in cells]
    return cells


def _layout(rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """Two halves (60 %) or a half and two quarters."""
    return split_cells(rng, 2 if rng.random() < 0.6 else 3)


def _object_box(cell, rng: np.random.Generator, size: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (v * size for v in cell)
    w, h = x1 - x0, y1 - y0
    fill = rng.uniform(0.8, 0.95)
    side_w, side_h = w * fill, h * fill
    ox, oy = x0 + rng.uniform(0, w - side_w), y0 + rng.uniform(0, h - side_h)
    return int(ox), int(oy), int(ox + side_w), int(oy + side_h)


def render_scene(rng: np.random.Generator, size: int = FRAME):
    """(image, classes, boxes, sounding index) for one frame."""
    cells = _layout(rng)
    classes = rng.choice(len(CLASSES), size=len(cells), replace=False)
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    boxes = []
    for cls, cell in zip(classes, cells):
        box = _object_box(cell, rng, size)
        draw_object(draw, int(cls), box, rng)
        boxes.append(box)
    return img, [int(c) for c in classes], boxes, int(rng.integers(len(cells)))


def render_object(rng: np.random.Generator, cls: int, size: int = 128) -> Image.Image:
    img = _background(rng, size)
    side = rng.uniform(0.45, 0.9) * size
    x0, y0 = rng.uniform(0, size - side, size=2)
    draw_object(ImageDraw.Draw(img), cls, (x0, y0, x0 + side, y0 + side), rng)
    return img


def synth_sound(rng: np.random.Generator, cls: int, duration: float = 3.0, sample_rate: int = 16000,
                snr_db: float = 10.0) -> np.ndarray:
    t = np.arange(int(duration * sample_rate)) / sample_rate
    f0 = F0[cls] * rng.uniform(0.97, 1.03)
    wave = np.zeros_like(t)
    for h in range(1, 7):
        if f0 * h < sample_rate / 2:
            wave += HARMONIC_DECAY[cls] ** (h - 1) * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
    pulse = 0.5 * (1 + np.sin(2 * np.pi * PULSE_HZ[cls] * rng.uniform(0.95, 1.05) * t + rng.uniform(0, 2 * np.pi)))
    wave = wave * (0.2 + 0.8 * pulse)
    wave /= np.sqrt(np.mean(wave ** 2)) + 1e-8
    noise = rng.normal(0, 10 ** (-snr_db / 20), size=t.shape)
    out = wave + noise
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def _flickr_xml(boxes: list[tuple[int, int, int, int]]) -> str:
    rows = []
    for x0, y0, x1, y1 in boxes:
        rows.append(f"    <bbox>\n      <label>sound</label>\n      <xmin>{x0}</xmin>\n      <ymin>{y0}</ymin>\n"
                    f"      <xmax>{x1}</xmax>\n      <ymax>{y1}</ymax>\n    </bbox>")
    return "<annotation>\n  <bboxes>\n" + "\n".join(rows) + "\n  </bboxes>\n</annotation>\n"


def _annotators(rng: np.random.Generator, box, n: int = 3, size: int = FRAME) -> list[tuple[int, int, int, int]]:
    out = []
    for _ in range(n):
        j = rng.normal(0, 4, size=4)
        x0, y0, x1, y1 = (int(np.clip(v + d, 0, size)) for v, d in zip(box, j))
        out.append((min(x0, x1 - 1), min(y0, y1 - 1), max(x1, x0 + 1), max(y1, y0 + 1)))
    return out


def generate(root: str | Path, n_train: int = 1200, n_val: int = 100, n_test: int = 200, n_objects: int = 600,
             seed: int = 0, duration: float = 3.0, sample_rate: int = 16000) -> Path:
    """Write the demo set under ``root`` (skipped when a complete set with the same settings exists)."""
    root = Path(root)
    settings = dict(n_train=n_train, n_val=n_val, n_test=n_test, n_objects=n_objects, seed=seed,
                    duration=duration, sample_rate=sample_rate, classes=CLASSES, version=1)
    stamp = root / "demo_settings.json"
    if stamp.exists() and json.loads(stamp.read_text()) == settings:
        return root
    rng = np.random.default_rng(seed)
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    vggss = []
    splits = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in splits.items():
        folder = root / ("train" if split == "train" else "test")
        ids = []
        for i in range(n):
            vid = f"{split}{i:05d}"
            img, classes, boxes, s = render_scene(rng)
            (folder / "frames").mkdir(parents=True, exist_ok=True)
            img.save(folder / "frames" / f"{vid}.jpg", quality=92)
            write_wav(folder / "audio" / f"{vid}.wav", synth_sound(rng, classes[s], duration, sample_rate), sample_rate)
            ids.append(vid)
            if split != "train":
                (folder / "Annotations").mkdir(exist_ok=True)
                (folder / "Annotations" / f"{vid}.xml").write_text(_flickr_xml(_annotators(rng, boxes[s])))
                vggss.append({"file": vid, "class": CLASSES[classes[s]],
                              "bbox": [[round(v / FRAME, 5) for v in boxes[s]]]})
        if split == "test":
            (meta / "demo_test.csv").write_text("".join(f"{v},0\n" for v in ids))
        else:
            (meta / f"demo_{split}.txt").write_text("".join(v + "\n" for v in ids))
    (meta / "vggss.json").write_text(json.dumps(vggss))
    for c, name in enumerate(CLASSES):
        d = root / "objects" / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_objects // len(CLASSES)):
            render_object(rng, c).save(d / f"{i:04d}.jpg", quality=92)
    stamp.write_text(json.dumps(settings))
    return root


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Write the generated audio-visual localization demo set.")
    p.add_argument("--root", required=True)
    p.add_argument("--n-train", type=int, default=1200)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--n-objects", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(generate(a.root, a.n_train, a.n_val, a.n_test, a.n_objects, a.seed))

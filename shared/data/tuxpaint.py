"""A real-media audio-visual demo set from Debian's ``tuxpaint-stamps-default``: object pictures
(transparent PNG) and, for some of them, a recording of that object's sound (``<name>.ogg`` beside
``<name>.png``; ``<name>_desc*.ogg`` and ``<name>_<lang>.ogg`` are spoken words and are not used).

Frames of 2-3 objects pasted on a random background, with known boxes and alpha masks; each frame is
paired with the recording of ONE of its objects (the sounding object), cropped at a random offset
and gain. The other objects are, by default (``distractors="silent"``), pictures of things that make
no sound in the package (fruit, furniture, clothes, ...: stamps without a recording), so the frame
shows exactly one thing that could make the sound, as a MUSIC-solo frame shows one instrument; with
``distractors="sounding"`` they come from the sounding classes too (a harder set where the frame
alone does not say which object sounds). Duet frames show two sounding objects. Written in the on-disk layout of the AVGN / EZ-VSL loaders, so a demo run exercises the
real data readers:

    <root>/train/frames/<id>.jpg   <root>/train/audio/<id>.wav      training pairs
    <root>/test/frames/<id>.jpg    <root>/test/audio/<id>.wav       evaluation pairs
    <root>/test/masks/<id>.pkl     the sounding object's alpha mask (VGG-Instruments style, 0/1 uint8)
    <root>/duet/frames/<id>_00000.jpg  <root>/duet/audio/<id>.wav   two-object frames whose audio is the
                                   sum of both objects' sounds (MUSIC-duet style: frame id = audio id + _NNNNN)
    <root>/metadata/<prefix>_train.txt   "id,class" lines
    <root>/metadata/<prefix>_test.csv    "id,class" lines
    <root>/metadata/<prefix>_test.json   VGG-SS style: [{"file", "class", "bbox": [[x0, y0, x1, y1]]}] normalised
    <root>/metadata/<prefix>_duet_test.csv  "frame id,class of source 1" lines
    <root>/metadata/<prefix>_duet.json   MUSIC-duet style: [{"file", "class_src1", "bbox_src1": [x, y, w, h],
                                          "class_src2", "bbox_src2"}] normalised xywh
    <root>/metadata/<prefix>_eval_ss.csv VGG-Music style separation pairs: source_1,source_2,class_1,class_2,sep_type
    <root>/metadata/<prefix>_classes.json  class -> the stamp files used

Each class has one picture and one recording, so train and test share the media and differ in
composition, crop, scale and gain: the set measures whether a model ties a sound to the object
making it, not generalisation to new recordings.

    python -m shared.data.tuxpaint --root data/oneavm_demo --n-train 600 --n-test 80
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from shared.data.audio import load_audio, write_wav
from shared.data.demo_av import split_cells
from shared.data.debian_packages import PACKAGES

log = logging.getLogger(__name__)

STAMPS = Path(PACKAGES["tuxpaint"][1])
# sounds that are the object's own sound (not speech), distinct from each other, >= 0.9 s long
DEFAULT_CLASSES = {
    "cello": "hobbies/music/string/cello", "violin": "hobbies/music/string/violin",
    "bassoon": "hobbies/music/wind/bassoon", "drumkit": "hobbies/music/percussion/drumkit",
    "cymbal": "hobbies/music/percussion/cymbal_crash", "frog": "animals/amphibians/frog",
    "rooster": "animals/birds/rooster", "cow": "animals/mammals/bovines/cow",
    "dog": "animals/mammals/dogs/dog", "lion": "animals/mammals/cats/lion",
    "duck": "animals/birds/duck", "horse": "animals/mammals/equines/horse",
}
HOW_TO_GET = "install Debian's tuxpaint-stamps-default (`sudo apt-get install tuxpaint-stamps-default`)"


# where the silent distractors come from: things that make no sound of their own (no animals, instruments,
# vehicles, people, fireworks, symbols such as musical notes)
DISTRACTOR_CATEGORIES = ("food", "plants", "household", "clothes", "space", "town", "sports")
DISTRACTOR_MODES = ("silent", "sounding")


class Picture:
    """A stamp's picture (RGBA)."""

    def __init__(self, name: str, png: Path):
        if not png.is_file():
            raise FileNotFoundError(f"tuxpaint stamp file missing: {png} ({HOW_TO_GET})")
        self.name, self.png = name, png
        with Image.open(png) as im:
            self.rgba = im.convert("RGBA")


class Stamp(Picture):
    """A stamp with its own recorded sound (trimmed and peak-normalised)."""

    def __init__(self, name: str, stem: Path, sample_rate: int):
        ogg = stem.with_suffix(".ogg")
        if not ogg.is_file():
            raise FileNotFoundError(f"tuxpaint stamp file missing: {ogg} ({HOW_TO_GET})")
        super().__init__(name, stem.with_suffix(".png"))
        self.ogg = ogg
        wave, _ = load_audio(ogg, sample_rate)
        # trim leading/trailing near-silence so crops hold the sound
        env = np.abs(wave) > 0.02 * np.abs(wave).max()
        idx = np.flatnonzero(env)
        self.wave = wave[idx[0]: idx[-1] + 1] / max(np.abs(wave).max(), 1e-6)


def load_stamps(classes: dict[str, str] | None = None, stamps_dir: Path = STAMPS,
                sample_rate: int = 11025) -> list[Stamp]:
    if not Path(stamps_dir).is_dir():
        raise FileNotFoundError(f"{stamps_dir} not found: {HOW_TO_GET}")
    classes = classes or DEFAULT_CLASSES
    return [Stamp(name, Path(stamps_dir) / rel, sample_rate) for name, rel in classes.items()]


def silent_pictures(n: int, seed: int = 0, stamps_dir: Path = STAMPS) -> list[Picture]:
    """``n`` stamps without a recording of their own (no ``<name>.ogg``) from ``DISTRACTOR_CATEGORIES``
    (things that make no sound), drawn with ``seed`` from the sorted list."""
    stamps_dir = Path(stamps_dir)
    if not stamps_dir.is_dir():
        raise FileNotFoundError(f"{stamps_dir} not found: {HOW_TO_GET}")
    pool = [p for p in sorted(stamps_dir.rglob("*.png"))
            if not p.with_suffix(".ogg").exists()
            and p.relative_to(stamps_dir).parts[0] in DISTRACTOR_CATEGORIES]
    if len(pool) < n:
        raise ValueError(f"{stamps_dir} holds {len(pool)} silent pictures, fewer than the {n} asked for")
    pick = np.random.default_rng(seed).choice(len(pool), n, replace=False)
    return [Picture(f"silent_{pool[i].stem}", pool[i]) for i in sorted(pick)]


def sound_crop(stamp: Stamp, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of the stamp's sound from a random offset (tiled when shorter), random gain."""
    w = stamp.wave
    if len(w) < n:
        w = np.tile(w, n // len(w) + 1)
    start = int(rng.integers(0, len(w) - n + 1))
    return (w[start:start + n] * rng.uniform(0.5, 1.0)).astype(np.float32)


def background(size: int, rng: np.random.Generator) -> Image.Image:
    c0, c1 = rng.integers(90, 256, 3), rng.integers(90, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    img = (c0 * (1 - t) + c1 * t) * np.ones((1, size, 1))
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


PLACEMENTS = ("free", "cells")


def compose(stamps: list[Stamp], size: int, rng: np.random.Generator, min_frac=0.3, max_frac=0.45,
            placement: str = "free", max_overlap: float = 0.25, tries: int = 20):
    """Paste the stamps on a random background. ``placement="free"``: each at a random place, its longer
    side ``min_frac``-``max_frac`` of the frame side, overlapping earlier ones by < ``max_overlap`` (25 %)
    where ``tries`` (20) tries allow (``max_overlap=0``: boxes disjoint, an error when the tries do not
    allow); ``"cells"``: the frame split into 2-3 cells (``demo_av.split_cells``: halves, or a half and two
    quarters), one stamp per cell filling 80-95 % of it, so objects never overlap and sit off-centre.
    Returns the RGB frame, the pixel boxes (x0, y0, x1, y1, end-exclusive) and the (size, size) 0/1 alpha
    mask of each stamp (occlusion by later stamps removed)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    canvas = background(size, rng)
    cells = split_cells(rng, len(stamps)) if placement == "cells" and len(stamps) > 1 else None
    boxes, masks = [], []
    for k, st in enumerate(stamps):
        w, h = st.rgba.size
        if cells is not None:
            cx0, cy0, cx1, cy1 = (v * size for v in cells[k])
            scale = rng.uniform(0.8, 0.95) * min((cx1 - cx0) / w, (cy1 - cy0) / h)
            bw, bh = max(1, int(w * scale)), max(1, int(h * scale))
            x0 = int(cx0 + rng.uniform(0, cx1 - cx0 - bw))
            y0 = int(cy0 + rng.uniform(0, cy1 - cy0 - bh))
        else:
            for _ in range(tries):  # rejection-sample a place that overlaps earlier boxes by < max_overlap
                side = int(size * rng.uniform(min_frac, max_frac))
                scale = side / max(w, h)
                bw, bh = max(1, int(w * scale)), max(1, int(h * scale))
                x0, y0 = int(rng.integers(0, size - bw + 1)), int(rng.integers(0, size - bh + 1))
                ok = all((_overlap((x0, y0, x0 + bw, y0 + bh), b) < max_overlap) if max_overlap > 0 else
                         _overlap((x0, y0, x0 + bw, y0 + bh), b) == 0 for b in boxes)
                if ok:
                    break
            else:
                if max_overlap <= 0:
                    raise ValueError(f"no place for {len(stamps)} disjoint objects at {min_frac}-{max_frac} of a "
                                     f"{size} px frame in {tries} tries")
        im = st.rgba.resize((bw, bh), Image.BICUBIC)
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        canvas.paste(im, (x0, y0), im)
        alpha = np.zeros((size, size), np.uint8)
        alpha[y0:y0 + bh, x0:x0 + bw] = np.asarray(im)[..., 3] > 127
        for m in masks:
            m &= ~alpha.astype(bool)
        ys, xs = np.nonzero(alpha)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else
                     (x0, y0, x0 + bw, y0 + bh))
        masks.append(alpha.astype(bool))
    return canvas, boxes, [m.astype(np.uint8) for m in masks]


def _overlap(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / max(1, min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))


def _write_pair(root: Path, split: str, vid: str, frame: Image.Image, wave: np.ndarray, sr: int) -> None:
    (root / split / "frames").mkdir(parents=True, exist_ok=True)
    frame.save(root / split / "frames" / f"{vid}.jpg", quality=92)
    write_wav(root / split / "audio" / f"{vid}.wav", wave, sr)


def make_tuxpaint_av(root: str | Path, n_train: int = 600, n_test: int = 80, n_duet: int = 40,
                     n_pairs: int = 80, size: int = 224, duration: float = 1.0, sample_rate: int = 11025,
                     prefix: str = "demo", seed: int = 0, classes: dict[str, str] | None = None,
                     stamps_dir: Path = STAMPS, max_objects: int = 3, distractors: str = "silent",
                     n_distractors: int = 32, object_frac: tuple[float, float] = (0.3, 0.45),
                     placement: str = "free") -> Path:
    """Write the demo set (see the module docstring) under ``root``; returns ``root``. Deterministic
    in the arguments; an existing complete set (its ``<prefix>_classes.json`` written last) made with
    the same arguments is kept, one made with other arguments is replaced."""
    if distractors not in DISTRACTOR_MODES:
        raise ValueError(f"distractors must be one of {DISTRACTOR_MODES}, got {distractors!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    root = Path(root)
    done = root / "metadata" / f"{prefix}_classes.json"
    settings = {"n_train": n_train, "n_test": n_test, "n_duet": n_duet, "n_pairs": n_pairs, "size": size,
                "duration": duration, "sample_rate": sample_rate, "seed": seed, "max_objects": max_objects,
                "distractors": distractors, "n_distractors": n_distractors, "object_frac": list(object_frac),
                "placement": placement, "classes": classes or DEFAULT_CLASSES}
    if done.is_file():
        old = json.loads(done.read_text()).get("settings")
        if old == json.loads(json.dumps(settings)):
            return root
        log.warning("%s was made with other settings (%s); making it again", root, old)
        for sub in ("train", "test", "duet", "metadata"):
            shutil.rmtree(root / sub, ignore_errors=True)
    stamps = load_stamps(classes, stamps_dir, sample_rate)
    if len(stamps) < max_objects:
        raise ValueError(f"need at least {max_objects} classes, got {len(stamps)}")
    others_pool = silent_pictures(n_distractors, seed, stamps_dir) if distractors == "silent" else stamps
    rng = np.random.default_rng(seed)
    n = int(round(duration * sample_rate))
    (root / "metadata").mkdir(parents=True, exist_ok=True)

    def frame_with(k: int, n_obj: int):
        pool = [i for i in range(len(others_pool)) if others_pool[i] is not stamps[k]]
        others = [others_pool[i] for i in rng.permutation(pool)[: n_obj - 1]]
        pictures = [stamps[k]] + others
        order = rng.permutation(len(pictures))
        frame, boxes, masks = compose([pictures[i] for i in order], size, rng, *object_frac, placement)
        j = int(np.flatnonzero(order == 0)[0])
        return frame, boxes[j], masks[j]

    rows = {"train": [], "test": []}
    test_json = []
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            k = i % len(stamps)  # balanced classes
            vid = f"{split}_{i:05d}"
            frame, box, mask = frame_with(k, int(rng.integers(2, max_objects + 1)))
            _write_pair(root, split, vid, frame, sound_crop(stamps[k], n, rng), sample_rate)
            rows[split].append((vid, stamps[k].name))
            if split == "test":
                test_json.append({"file": vid, "class": stamps[k].name,
                                  "bbox": [[box[0] / size, box[1] / size, box[2] / size, box[3] / size]]})
                (root / "test" / "masks").mkdir(parents=True, exist_ok=True)
                with open(root / "test" / "masks" / f"{vid}.pkl", "wb") as f:
                    pickle.dump(mask, f)
    for split, name in (("train", f"{prefix}_train.txt"), ("test", f"{prefix}_test.csv")):
        (root / "metadata" / name).write_text("".join(f"{v},{c}\n" for v, c in rows[split]))
    (root / "metadata" / f"{prefix}_test.json").write_text(json.dumps(test_json))

    duet = []
    for i in range(n_duet):
        a, b = (int(x) for x in rng.choice(len(stamps), 2, replace=False))
        frame, boxes, _ = compose([stamps[a], stamps[b]], size, rng, *object_frac, placement)
        vid = f"duet_{i:05d}"
        (root / "duet" / "frames").mkdir(parents=True, exist_ok=True)
        frame.save(root / "duet" / "frames" / f"{vid}_00000.jpg", quality=92)
        write_wav(root / "duet" / "audio" / f"{vid}.wav",
                  0.5 * (sound_crop(stamps[a], n, rng) + sound_crop(stamps[b], n, rng)), sample_rate)
        xywh = [[x0 / size, y0 / size, (x1 - x0) / size, (y1 - y0) / size] for x0, y0, x1, y1 in boxes]
        duet.append({"file": f"{vid}_00000", "class_src1": stamps[a].name, "bbox_src1": xywh[0],
                     "class_src2": stamps[b].name, "bbox_src2": xywh[1]})
    (root / "metadata" / f"{prefix}_duet.json").write_text(json.dumps(duet))
    (root / "metadata" / f"{prefix}_duet_test.csv").write_text("".join(f"{d['file']},{d['class_src1']}\n" for d in duet))

    # separation pairs over test clips of different classes (Easy: an instrument with an animal, Hard: same family)
    instruments = {"cello", "violin", "bassoon", "drumkit", "cymbal"}
    with open(root / "metadata" / f"{prefix}_eval_ss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source_1", "source_2", "class_1", "class_2", "sep_type"])
        test = rows["test"]
        made = 0
        while made < n_pairs:
            i, j = (int(x) for x in rng.choice(len(test), 2, replace=False))
            if test[i][1] == test[j][1]:
                continue
            hard = (test[i][1] in instruments) == (test[j][1] in instruments)
            w.writerow([test[i][0], test[j][0], test[i][1], test[j][1], "Hard" if hard else "Easy"])
            made += 1
    done.write_text(json.dumps({"classes": {s.name: [str(s.png), str(s.ogg)] for s in stamps},
                                "distractor_pictures": [str(p.png) for p in others_pool if not hasattr(p, "ogg")],
                                "settings": settings}, indent=1))
    log.info("tuxpaint demo set written to %s", root)
    return root


# categories whose stamps' own recordings are the object's sound (symbols, road signs and the roll call are speech)
TWO_OBJECT_CATEGORIES = ("animals", "hobbies", "household", "seasonal", "vehicles", "naturalforces", "space", "food")


def sounding_stamps(stamps_dir: Path = STAMPS, categories=TWO_OBJECT_CATEGORIES, sample_rate: int = 11025,
                    min_seconds: float = 0.3) -> list[Stamp]:
    """Every stamp of ``categories`` with a recording of its own (``<name>.ogg`` beside ``<name>.png``),
    at least ``min_seconds`` long after trimming, sorted by path; each is its own class (its stem)."""
    stamps_dir = Path(stamps_dir)
    if not stamps_dir.is_dir():
        raise FileNotFoundError(f"{stamps_dir} not found: {HOW_TO_GET}")
    out = []
    for png in sorted(stamps_dir.rglob("*.png")):
        rel = png.relative_to(stamps_dir)
        if rel.parts[0] not in categories or not png.with_suffix(".ogg").is_file():
            continue
        try:
            st = Stamp(png.stem, png.with_suffix(""), sample_rate)
        except IndexError:  # an all-zero recording: nothing to hear
            continue
        if len(st.wave) >= min_seconds * sample_rate:
            out.append(st)
    return out


TWO_OBJECT_SPLITS = ("train", "val", "test")


def make_tuxpaint_two_objects(root: str | Path, n_train: int = 600, n_val: int = 80, n_test: int = 80,
                              size: int = 224, duration: float = 1.0, sample_rate: int = 11025,
                              prefix: str = "two", seed: int = 0, stamps_dir: Path = STAMPS,
                              object_frac: tuple[float, float] = (0.3, 0.45),
                              split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                              disjoint_objects: bool = True,
                              categories: tuple[str, ...] = TWO_OBJECT_CATEGORIES) -> Path:
    """Two-object frames: two DIFFERENT sounding stamps at random, non-overlapping places (boxes disjoint;
    longer side ``object_frac`` of the frame), the audio a crop of ONE of them (the heard one, either with
    equal chance), its box the ground truth. The same layout as ``make_tuxpaint_av``:

        <root>/<split>/frames/<id>.jpg  <root>/<split>/audio/<id>.wav      split = train, val, test
        <root>/metadata/<prefix>_train.txt  <prefix>_val.csv  <prefix>_test.csv   "id,class of the heard object"
        <root>/metadata/<prefix>_{val,test}.json   VGG-SS style: [{"file", "class", "bbox": [[x0, y0, x1, y1]],
                                                    "class_other", "bbox_other": [x0, y0, x1, y1]}] normalised
        <root>/<split>/masks/<id>.pkl   the heard object's alpha mask (val and test)
        <root>/metadata/<prefix>_classes.json  the objects of each split and the settings (written last)

    Objects (``sounding_stamps``: each stamp with its own recording is one picture + one recording) are
    shuffled with ``seed`` and split ``split_fractions`` into train / val / test objects, so with
    ``disjoint_objects`` (default) no picture or recording of one split appears in another; with
    ``disjoint_objects=False`` every split draws from all objects (new compositions only); ``categories``:
    the stamp folders drawn from (``TWO_OBJECT_CATEGORIES``, 91 objects in the Debian package). Deterministic
    in the arguments; a complete set made with the same arguments is kept, one made with others replaced."""
    root = Path(root)
    done = root / "metadata" / f"{prefix}_classes.json"
    settings = {"kind": "two_objects", "n_train": n_train, "n_val": n_val, "n_test": n_test, "size": size,
                "duration": duration, "sample_rate": sample_rate, "seed": seed, "object_frac": list(object_frac),
                "split_fractions": list(split_fractions), "disjoint_objects": disjoint_objects,
                "stamps_dir": str(stamps_dir), "categories": list(categories)}
    if done.is_file():
        old = json.loads(done.read_text()).get("settings")
        if old == json.loads(json.dumps(settings)):
            return root
        log.warning("%s was made with other settings (%s); making it again", root, old)
        for sub in (*TWO_OBJECT_SPLITS, "metadata"):
            shutil.rmtree(root / sub, ignore_errors=True)
    stamps = sounding_stamps(stamps_dir, categories, sample_rate=sample_rate)
    rng = np.random.default_rng(seed)
    order = [stamps[i] for i in rng.permutation(len(stamps))]
    if disjoint_objects:
        cuts = np.floor(np.cumsum(split_fractions) / sum(split_fractions) * len(order)).astype(int)
        pools = dict(zip(TWO_OBJECT_SPLITS, (order[:cuts[0]], order[cuts[0]:cuts[1]], order[cuts[1]:])))
    else:
        pools = {s: order for s in TWO_OBJECT_SPLITS}
    for split, pool in pools.items():
        if len(pool) < 2:
            raise ValueError(f"the {split} split has {len(pool)} objects ({len(stamps)} in all); it needs two")
    n = int(round(duration * sample_rate))
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        pool, rows, records = pools[split], [], []
        for i in range(count):
            a, b = (int(x) for x in rng.choice(len(pool), 2, replace=False))
            frame, boxes, masks = compose([pool[a], pool[b]], size, rng, *object_frac, placement="free",
                                          max_overlap=0.0, tries=200)
            heard = int(rng.integers(0, 2))
            st, other = (pool[a], pool[b]) if heard == 0 else (pool[b], pool[a])
            vid = f"{split}_{i:05d}"
            _write_pair(root, split, vid, frame, sound_crop(st, n, rng), sample_rate)
            rows.append((vid, st.name))
            if split != "train":
                norm = lambda bx: [bx[0] / size, bx[1] / size, bx[2] / size, bx[3] / size]  # noqa: E731
                records.append({"file": vid, "class": st.name, "bbox": [norm(boxes[heard])],
                                "class_other": other.name, "bbox_other": norm(boxes[1 - heard])})
                (root / split / "masks").mkdir(parents=True, exist_ok=True)
                with open(root / split / "masks" / f"{vid}.pkl", "wb") as f:
                    pickle.dump(masks[heard], f)
        name = f"{prefix}_train.txt" if split == "train" else f"{prefix}_{split}.csv"
        (root / "metadata" / name).write_text("".join(f"{v},{c}\n" for v, c in rows))
        if split != "train":
            (root / "metadata" / f"{prefix}_{split}.json").write_text(json.dumps(records))
    done.write_text(json.dumps({"objects": {s: {st.name: [str(st.png), str(st.ogg)] for st in pool}
                                            for s, pool in pools.items()}, "settings": settings}, indent=1))
    log.info("tuxpaint two-object set written to %s", root)
    return root


def make_object_pictures(root: str | Path, n_per_class: int = 50, size: int = 112, seed: int = 0,
                         classes: dict[str, str] | None = None, stamps_dir: Path = STAMPS,
                         min_frac: float = 0.3, max_frac: float = 0.9, n_distractors: int = 0) -> Path:
    """Single-object pictures ``<root>/objects/<class>/<n>.jpg`` (ImageFolder layout): each class's
    stamp alone on a random background at a random place and scale, for the sounding classes and
    the ``n_distractors`` silent pictures ``silent_pictures(n_distractors, seed)`` (the same ones
    ``make_tuxpaint_av`` places beside the sounding object). The demo's stand-in for ImageNet
    pre-training trains a classifier on them. Deterministic in the arguments; an existing set made
    with the same arguments is kept, one made with others replaced."""
    root = Path(root)
    done = root / "objects" / "done.json"
    settings = {"n_per_class": n_per_class, "size": size, "seed": seed, "classes": classes or DEFAULT_CLASSES,
                "min_frac": min_frac, "max_frac": max_frac, "n_distractors": n_distractors}
    if done.is_file():
        if json.loads(done.read_text()).get("settings") == json.loads(json.dumps(settings)):
            return root / "objects"
        log.warning("%s was made with other settings; making it again", root / "objects")
        shutil.rmtree(root / "objects")
    pictures = load_stamps(classes, stamps_dir) + (silent_pictures(n_distractors, seed, stamps_dir) if n_distractors else [])
    rng = np.random.default_rng(seed + 1)
    for st in pictures:
        d = root / "objects" / st.name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            frame, _, _ = compose([st], size, rng, min_frac=min_frac, max_frac=max_frac)
            frame.save(d / f"{i:04d}.jpg", quality=92)
    done.write_text(json.dumps({"classes": [p.name for p in pictures], "settings": settings}))
    return root / "objects"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True)
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--n-test", type=int, default=80)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--sample-rate", type=int, default=11025)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(make_tuxpaint_av(a.root, a.n_train, a.n_test, size=a.size, duration=a.duration,
                           sample_rate=a.sample_rate, seed=a.seed))


if __name__ == "__main__":
    main()

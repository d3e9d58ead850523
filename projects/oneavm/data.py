"""OneAVM data: frames + audio clips in the layout of the lab's public repos (AVGN, EZ-VSL,
DeepAVFusion), and the annotation formats their evaluations read.

    <data.root>/<dir>/frames/<frame id>.jpg   <data.root>/<dir>/audio/<audio id>.wav
    <data.root>/<metadata_dir>/<list>          "id,class" lines (AVGN *_train.txt / *_test.csv), or "id" lines

MUSIC frames are named <audio id>_<frame index> (``audio_id: strip_frame_index`` drops the last
"_NNNNN"); the other sets use the same id for both (``audio_id: same``). Annotation formats
(``eval.sets.<name>.annotations``):

- ``vggss``: VGG-SS json [{"file", "bbox": [[x0, y0, x1, y1], ...]}], normalised corners, union map;
- ``music_solo``: AVGN json [{"file", "bbox": [x, y, w, h]}] (``box_format``: xywh, or xyxy as AVGN reads it);
- ``music_duet``: AVGN json [{"file", "bbox_src1", "bbox_src2", "class_src1", "class_src2"}], normalised
  xywh (AVGN's loader reads them as corners: a latent bug; ``box_format: xyxy`` reproduces it), union map;
- ``masks``: VGG-Instruments: a folder of pickled (H, W) masks <id>.pkl, resized to 224 (nearest);
- ``none``: no localization ground truth (recognition and retrieval only).

Separation pairs (VGG-Music ``vggmusic_eval_ss.csv``): a csv with header source_1,source_2,class_1,
class_2,sep_type; both clips are read from the set's ``dir``.

Audio: mono, resampled to ``data.audio.sample_rate``, ``data.audio.n_samples`` samples centred on
the file's middle (tiled when shorter). Images: train Resize(short side S * resize_ratio) +
RandomCrop(S) + horizontal flip; test Resize((S, S)); ImageNet mean/std.
"""
from __future__ import annotations

import csv
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from shared.data.audio import MediaError, center_crop_or_tile, load_audio
from shared.data.images import load_image
from shared.data.index import DatasetError, eval_set_folder, require_dir
from shared.data.robust import BadSample
from shared.metrics.localization import gt_map_from_boxes

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOW_TO_GET = ("See projects/oneavm/README.md, 'Data': frames/ and audio/ extracted from the MUSIC, "
              "VGGSound (VGG-Instruments, VGG-Music, VGG-SS) videos; the id lists and annotations from the "
              "stoneMo/AVGN and stoneMo/DeepAVFusion metadata folders.")
ANNOTATIONS = ("vggss", "music_solo", "music_duet", "masks", "none")
GT_SIZE = 224


def read_list(path: Path) -> list[tuple[str, str | None]]:
    """(id, class or None) from an "id,class" / "id" list; an empty or missing list is an error."""
    if not path.is_file():
        raise DatasetError(f"id list not found: {path}\n{HOW_TO_GET}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if not parts[0]:
            raise DatasetError(f"{path}:{n}: empty id")
        rows.append((parts[0], parts[1] if len(parts) > 1 and parts[1] else None))
    if not rows:
        raise DatasetError(f"{path}: the list is empty")
    return rows


def audio_id_of(frame_id: str, rule: str) -> str:
    if rule == "same":
        return frame_id
    if rule == "strip_frame_index":
        stem, sep, idx = frame_id.rpartition("_")
        if not sep or not idx.isdigit():
            raise DatasetError(f"frame id {frame_id!r} does not end in _<frame index> (audio_id: strip_frame_index)")
        return stem
    raise ValueError(f"audio_id must be same or strip_frame_index, got {rule!r}")


def norm_boxes_to_pixels(boxes, box_format: str, size: int = GT_SIZE) -> list[list[int]]:
    """Normalised boxes -> pixel (x0, y0, x1, y1) ints at ``size``, clipped to the image."""
    out = []
    for b in boxes:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (4,):
            raise DatasetError(f"a box needs 4 numbers, got {b.tolist()}")
        if box_format == "xywh":
            b = np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]])
        elif box_format != "xyxy":
            raise ValueError(f"box_format must be xyxy or xywh, got {box_format!r}")
        out.append([int(v) for v in (np.clip(b, 0, 1) * size).astype(int)])
    return out


def load_annotations(kind: str, path: Path, box_format: str) -> dict:
    """id -> {"boxes": [[x0, y0, x1, y1] px at 224, ...], "classes": [...]} or {"mask": path}."""
    if kind not in ANNOTATIONS:
        raise ValueError(f"annotations must be one of {ANNOTATIONS}, got {kind!r}")
    if kind == "none":
        return {}
    if kind == "masks":
        require_dir(path, "segmentation-mask folder", HOW_TO_GET)
        return {p.stem: {"mask": p} for p in sorted(path.glob("*.pkl"))}
    if not path.is_file():
        raise DatasetError(f"{kind} annotations not found: {path}\n{HOW_TO_GET}")
    try:
        records = json.loads(path.read_text())
        out = {}
        for r in records:
            if kind == "vggss":
                out[r["file"]] = {"boxes": norm_boxes_to_pixels(r["bbox"], box_format), "classes": [r.get("class")]}
            elif kind == "music_solo":
                out[r["file"]] = {"boxes": norm_boxes_to_pixels([r["bbox"]], box_format), "classes": [r.get("class")]}
            else:
                out[r["file"]] = {"boxes": norm_boxes_to_pixels([r["bbox_src1"], r["bbox_src2"]], box_format),
                                  "classes": [r["class_src1"], r["class_src2"]]}
        return out
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: not a {kind} annotation file ({type(e).__name__}: {e})") from e


def mask_gt_map(path: Path, size: int = GT_SIZE) -> np.ndarray:
    """A pickled segmentation mask resized to (size, size) with nearest interpolation, as 0/1 floats."""
    try:
        with open(path, "rb") as f:
            m = np.asarray(pickle.load(f))
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable mask ({type(e).__name__}: {e})") from e
    if m.ndim != 2:
        raise DatasetError(f"{path}: a mask must be 2-D, got shape {m.shape}")
    img = Image.fromarray((m > 0).astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return (np.asarray(img) > 127).astype(np.float64)


class AVClips(Dataset):
    """(frame, waveform) clips by id, with the class index and, for evaluation, the gt map.

    Items are ``(index, seed)`` from ResumableSampler (the seed drives crop and flip) or plain indices.
    An unreadable file yields a BadSample (counted by the caller), never another sample."""

    def __init__(self, rows: list[tuple[str, str | None]], pair_dir: Path, cfg_data, classes: list[str],
                 train: bool = False, audio_id: str = "same", annotations: dict | None = None):
        self.rows, self.dir, self.train = rows, Path(pair_dir), train
        self.image_size, self.resize_ratio = int(cfg_data.image_size), float(cfg_data.resize_ratio)
        self.sample_rate, self.n_samples = int(cfg_data.audio.sample_rate), int(cfg_data.audio.n_samples)
        self.classes = classes
        self.class_index = {c: i for i, c in enumerate(classes)}
        self.audio_ids = [audio_id_of(r[0], audio_id) for r in rows]
        self.annotations = annotations

    @property
    def ids(self) -> list[str]:
        return [r[0] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, vid: str, rng: np.random.Generator | None) -> torch.Tensor:
        img = load_image(self.dir / "frames" / f"{vid}.jpg")
        s = self.image_size
        if self.train:
            img = TF.resize(img, int(s * self.resize_ratio), interpolation=InterpolationMode.BICUBIC)
            t = torch.from_numpy(np.array(img)).permute(2, 0, 1)
            h, w = t.shape[1:]
            top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            t = t[:, top:top + s, left:left + s]
            if rng.random() < 0.5:
                t = t.flip(-1)
        else:
            t = torch.from_numpy(np.array(TF.resize(img, [s, s], interpolation=InterpolationMode.BICUBIC))).permute(2, 0, 1)
        return TF.normalize(t.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)

    def wave(self, aid: str) -> torch.Tensor:
        w, _ = load_audio(self.dir / "audio" / f"{aid}.wav", self.sample_rate)
        return torch.from_numpy(np.ascontiguousarray(center_crop_or_tile(w, self.n_samples)))

    def gt_map(self, vid: str) -> np.ndarray:
        ann = self.annotations[vid]
        if "mask" in ann:
            return mask_gt_map(ann["mask"])
        return gt_map_from_boxes(ann["boxes"], GT_SIZE, "vggss")

    def __getitem__(self, item):
        idx, seed = item if isinstance(item, tuple) else (item, item)
        vid, cls = self.rows[idx]
        try:
            out = {"image": self.image(vid, np.random.default_rng(seed)), "wave": self.wave(self.audio_ids[idx]),
                   "label": self.class_index.get(cls, -1), "index": idx, "audio_key": self.audio_ids[idx]}
            if self.annotations:
                out["gt_map"] = torch.from_numpy(self.gt_map(vid)).float()
        except (MediaError, FileNotFoundError, DatasetError) as e:
            return BadSample(vid, str(e))
        return out


class SeparationPairs(Dataset):
    """The fixed evaluation pairs (VGG-Music style csv): both clips' frames and waveforms."""

    def __init__(self, pairs: list[dict], clips: AVClips):
        self.pairs, self.clips = pairs, clips
        self.index = {vid: i for i, vid in enumerate(clips.ids)}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):
        p = self.pairs[i]
        a, b = self.clips[self.index[p["source_1"]]], self.clips[self.index[p["source_2"]]]
        for x in (a, b):
            if isinstance(x, BadSample):
                return BadSample(f"{p['source_1']}+{p['source_2']}", x.error)
        return {"image": torch.stack([a["image"], b["image"]]), "wave": torch.stack([a["wave"], b["wave"]]),
                "key": f"{p['source_1']}+{p['source_2']}", "sep_type": p.get("sep_type") or "", "index": i}


def read_pairs(path: Path, known: set[str]) -> list[dict]:
    if not path.is_file():
        raise DatasetError(f"separation pair list not found: {path}\n{HOW_TO_GET}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"source_1", "source_2"} <= set(rows[0]):
        raise DatasetError(f"{path}: expected a csv with header source_1,source_2,class_1,class_2,sep_type")
    same = [r for r in rows if r["source_1"] == r["source_2"]]
    if same:
        raise DatasetError(f"{path}: {len(same)} pairs mix a clip with itself (e.g. {same[0]['source_1']}); "
                           "their separation is undefined")
    missing = sorted({r[k] for r in rows for k in ("source_1", "source_2")} - known)
    if missing:
        raise DatasetError(f"{path}: {len(missing)} pair sources are not in the set's id list (e.g. {missing[:3]})")
    return rows


def pair_clips(path: Path) -> list[tuple[str, str | None]]:
    """(id, class) of every clip a pair list names, in first-seen order."""
    if not path.is_file():
        raise DatasetError(f"separation pair list not found: {path}\n{HOW_TO_GET}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    seen = {}
    for r in rows:
        for k in ("1", "2"):
            if f"source_{k}" not in r:
                raise DatasetError(f"{path}: expected a csv with header source_1,source_2,class_1,class_2,sep_type")
            seen.setdefault(r[f"source_{k}"], r.get(f"class_{k}") or None)
    return list(seen.items())


def class_list(rows: list[tuple[str, str | None]]) -> list[str]:
    return sorted({c for _, c in rows if c is not None})


def train_set(cfg) -> AVClips:
    d = cfg.data
    root = require_dir(d.root, "data root (data.root)", HOW_TO_GET)
    pair_dir = require_dir(root / d.train.dir, "training folder (data.train.dir)", HOW_TO_GET)
    rows = read_list(root / d.metadata_dir / d.train.list)
    rows = _check_files(rows, pair_dir, d.train.audio_id, d.skip_missing, f"training list {d.train.list}")
    return AVClips(rows, pair_dir, d, class_list(rows), train=True, audio_id=d.train.audio_id)


def _check_files(rows, pair_dir: Path, audio_id: str, skip_missing: bool, what: str):
    frames = {p.stem for p in (pair_dir / "frames").glob("*.jpg")} if (pair_dir / "frames").is_dir() else set()
    audio = {p.stem for p in (pair_dir / "audio").glob("*.wav")} if (pair_dir / "audio").is_dir() else set()
    missing = [r for r in rows if r[0] not in frames or audio_id_of(r[0], audio_id) not in audio]
    if missing and not skip_missing:
        raise DatasetError(f"{what}: {len(missing)} of {len(rows)} ids have no frame or audio under {pair_dir} "
                           f"(e.g. {[r[0] for r in missing[:3]]}); data.skip_missing=true uses the rest\n{HOW_TO_GET}")
    if missing:
        log.warning("%s: skipping %d ids with missing files (data.skip_missing=true)", what, len(missing))
        rows = [r for r in rows if r not in missing]
    if not rows:
        raise DatasetError(f"{what}: no usable clips under {pair_dir}")
    return rows


def eval_set(cfg, name: str, classes: list[str] | None = None) -> AVClips:
    """The clips of ``eval.sets.<name>``; ids without annotations are an error (or skipped and reported
    with data.skip_missing)."""
    d = cfg.data
    s, root, pair_dir = eval_set_folder(cfg, name, HOW_TO_GET)
    if s.get("list"):
        rows = read_list(root / d.metadata_dir / s.list)
    elif s.get("pairs"):  # a separation set without its own list: the clips the pairs name
        rows = pair_clips(root / d.metadata_dir / s.pairs)
    else:
        raise DatasetError(f"eval.sets.{name} needs a list (or, for separation, pairs)")
    rows = _check_files(rows, pair_dir, s.get("audio_id", "same"), d.skip_missing, f"set {name}")
    kind = s.get("annotations", "none")
    ann_path = root / (s.get("annotation_path") or "")
    ann = load_annotations(kind, ann_path, s.get("box_format", "xyxy"))
    if kind != "none":
        missing = [r for r in rows if r[0] not in ann]
        if missing and not d.skip_missing:
            raise DatasetError(f"set {name}: {len(missing)} of {len(rows)} ids have no {kind} annotation in {ann_path} "
                               f"(e.g. {[r[0] for r in missing[:3]]})")
        if missing:
            log.warning("set %s: %d ids without annotation skipped (data.skip_missing=true)", name, len(missing))
            rows = [r for r in rows if r[0] in ann]
    return AVClips(rows, pair_dir, d, classes or class_list(rows), train=False,
                   audio_id=s.get("audio_id", "same"), annotations=ann or None)


def separation_set(cfg, name: str) -> SeparationPairs:
    s = cfg.eval.sets[name]
    clips = eval_set(cfg, name)
    pairs = read_pairs(Path(cfg.data.root) / cfg.data.metadata_dir / s.pairs, set(clips.ids))
    return SeparationPairs(pairs, clips)

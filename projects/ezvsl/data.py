"""EZ-VSL data: Flickr-SoundNet and VGG-Sound in the official layouts, and the demo set.

    <data.root>/<train_dir>/frames/<id>.jpg, <data.root>/<train_dir>/audio/<id>.wav
    <data.root>/<metadata_dir>/<trainset>.txt            (flickr_10k, vggss_144k, ... from the official repo)
    <data.root>/<set.dir>/frames|audio/<id>.*            (test / validation pairs)
    <data.root>/<set.annotations>                        (Flickr XML folder, or VGG-SS json)

Audio: a centred 3 s mono clip (tiled if shorter) at the file's own rate, scipy linear
spectrogram (nperseg 512, noverlap 274), log(x + 1e-7), divided by 12.
Images: train Resize(short 246) + RandomCrop(224) + flip; test Resize((224, 224)); bicubic; ImageNet mean/std.
"""
from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from shared.data.audio import MediaError, load_audio_clip
from shared.data.cache import NpyCache
from shared.data.images import load_image
from shared.data.index import DatasetError, check_ids, eval_set_folder, read_id_list, require_dir
from shared.data.robust import BadSample
from shared.data.spectrogram import linear_log_spectrogram
from shared.metrics.localization import gt_map_from_boxes

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOW_TO_GET = ("See projects/ezvsl/README.md, 'Data': the frames/audio come from the Flickr-SoundNet and "
              "VGG-Sound releases, the id lists and vggss.json from the official repo's metadata/ folder.")


def load_flickr_boxes(xml_path: Path, size: int = 224) -> list[list[int]]:
    """Boxes of one Flickr-SoundNet annotation file (all annotators), scaled from 256 to ``size``
    pixels with int truncation as the official parser does."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{xml_path}: malformed XML ({e})") from e
    boxes = []
    for child in root:
        for bbox in child:
            if bbox.tag != "bbox":
                continue
            named = {c.tag: c.text for c in bbox}
            if all(k in named for k in ("xmin", "ymin", "xmax", "ymax")):
                vals = [named[k] for k in ("xmin", "ymin", "xmax", "ymax")]
            else:  # positional, as the official parser: skip the first field
                vals = [c.text for c in list(bbox)[1:5]]
            try:
                boxes.append([int(size * int(float(v)) / 256) for v in vals])
            except (TypeError, ValueError) as e:
                raise DatasetError(f"{xml_path}: a <bbox> does not hold four numbers ({vals})") from e
            if len(boxes[-1]) != 4:
                raise DatasetError(f"{xml_path}: a <bbox> does not hold four numbers ({vals})")
    if not boxes:
        raise DatasetError(f"{xml_path}: no <bbox> found")
    return boxes


def load_vggss_boxes(json_path: Path, size: int = 224) -> dict[str, list[list[int]]]:
    if not json_path.is_file():
        raise DatasetError(f"VGG-SS annotations not found: {json_path}\n{HOW_TO_GET}")
    try:
        records = json.loads(json_path.read_text())
        return {r["file"]: [list((np.clip(np.array(b, dtype=float), 0, 1) * size).astype(int)) for b in r["bbox"]]
                for r in records}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{json_path}: not a VGG-SS annotation list ({type(e).__name__}: {e})") from e


class AVPairs(Dataset):
    """(frame, spectrogram) pairs by id; with boxes, also the 224x224 gt map for evaluation.

    Items are ``(index, seed)`` from ResumableSampler (seed drives crop/flip) or plain indices.
    An unreadable file yields a BadSample (counted by the trainer), never another sample.
    """

    def __init__(self, ids: list[str], pair_dir: Path, audio_cfg, image_size: int = 224, train: bool = False,
                 resize_ratio: float = 1.1, boxes: dict | None = None, box_mode: str = "flickr",
                 cache_dir: str | None = None):
        self.ids, self.dir, self.audio_cfg = ids, Path(pair_dir), audio_cfg
        self.image_size, self.train, self.resize_ratio = image_size, train, resize_ratio
        self.boxes, self.box_mode = boxes, box_mode
        # decoded frames (after the deterministic resize) and spectrograms, keyed by every setting they depend on
        tag = f"{'train' if train else 'test'}{image_size}r{resize_ratio}_" + "_".join(
            f"{k}{audio_cfg[k]}" for k in ("duration", "sample_rate", "nperseg", "noverlap"))
        self.cache = NpyCache(Path(cache_dir) / tag) if cache_dir else None

    def __len__(self) -> int:
        return len(self.ids)

    def frame_path(self, vid: str) -> Path:
        return self.dir / "frames" / f"{vid}.jpg"

    def audio_path(self, vid: str) -> Path:
        return self.dir / "audio" / f"{vid}.wav"

    def _resized_frame(self, vid: str) -> np.ndarray:
        """The frame after the deterministic resize, uint8 (H, W, 3)."""
        img = load_image(self.frame_path(vid))
        s = self.image_size
        size = int(s * self.resize_ratio) if self.train else [s, s]
        return np.asarray(TF.resize(img, size, interpolation=InterpolationMode.BICUBIC))

    def image_tensor(self, vid: str, rng: np.random.Generator | None) -> torch.Tensor:
        frame = self.cache.get(f"{vid}.img", lambda: self._resized_frame(vid)) if self.cache else self._resized_frame(vid)
        img = torch.from_numpy(np.array(frame)).permute(2, 0, 1)
        if self.train:
            s = self.image_size
            h, w = img.shape[1:]
            top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            img = img[:, top:top + s, left:left + s]
            if rng.random() < 0.5:
                img = img.flip(-1)
        return TF.normalize(img.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)

    def _spectrogram(self, vid: str) -> np.ndarray:
        a = self.audio_cfg
        wave, sr = load_audio_clip(self.audio_path(vid), a.duration, a.sample_rate)
        return linear_log_spectrogram(wave, sr, a.nperseg, a.noverlap)

    def spectrogram(self, vid: str) -> torch.Tensor:
        spec = self.cache.get(f"{vid}.spec", lambda: self._spectrogram(vid)) if self.cache else self._spectrogram(vid)
        return torch.from_numpy(spec / self.audio_cfg.std).unsqueeze(0)

    def __getitem__(self, item):
        idx, seed = item if isinstance(item, tuple) else (item, item)
        vid = self.ids[idx]
        try:
            out = {"image": self.image_tensor(vid, np.random.default_rng(seed)), "spec": self.spectrogram(vid),
                   "index": idx}
        except (MediaError, FileNotFoundError) as e:
            return BadSample(vid, str(e))
        if self.boxes is not None:
            out["gt_map"] = torch.from_numpy(gt_map_from_boxes(self.boxes[vid], 224, self.box_mode)).float()
        return out


def _pair_paths(pair_dir: Path):
    return lambda vid: [pair_dir / "frames" / f"{vid}.jpg", pair_dir / "audio" / f"{vid}.wav"]


def train_set(cfg) -> AVPairs:
    d = cfg.data
    root = require_dir(d.root, "data root (data.root)", HOW_TO_GET)
    pair_dir = require_dir(root / d.train_dir, "training pairs folder (data.train_dir)", HOW_TO_GET)
    require_dir(pair_dir / "frames", "frames folder", HOW_TO_GET)
    require_dir(pair_dir / "audio", "audio folder", HOW_TO_GET)
    if d.trainset == "all":  # the official 'flickr'/'vggss' sets: every id with both files
        stems = lambda sub, ext: {p.name[: -len(ext)] for p in (pair_dir / sub).iterdir() if p.name.endswith(ext)}
        ids = sorted(stems("frames", ".jpg") & stems("audio", ".wav"))
        if not ids:
            raise DatasetError(f"no <id>.jpg / <id>.wav pairs in {pair_dir}\n{HOW_TO_GET}")
    else:
        ids = read_id_list(root / d.metadata_dir / f"{d.trainset}.txt", what=f"training id list '{d.trainset}'")
        ids, missing = check_ids(ids, _pair_paths(pair_dir), d.skip_missing, what=f"training set {d.trainset}")
        if missing:
            log.warning("training set %s: skipping %d ids with missing files (data.skip_missing=true)",
                        d.trainset, len(missing))
    return AVPairs(ids, pair_dir, d.audio, d.image_size, train=True, resize_ratio=d.resize_ratio, cache_dir=d.cache_dir)


def eval_set(cfg, name: str) -> AVPairs:
    d = cfg.data
    s, root, pair_dir = eval_set_folder(cfg, name, HOW_TO_GET)
    ids = read_id_list(root / d.metadata_dir / s.ids, what=f"'{name}' id list")
    if s.boxes == "flickr":
        ann = require_dir(root / s.annotations, f"'{name}' Flickr annotation folder", HOW_TO_GET)
        boxes = {vid: load_flickr_boxes(ann / f"{vid}.xml") for vid in ids if (ann / f"{vid}.xml").is_file()}
    elif s.boxes == "vggss":
        boxes = load_vggss_boxes(root / d.metadata_dir / s.annotations)
    else:
        raise ValueError(f"eval.sets.{name}.boxes must be 'flickr' or 'vggss', got {s.boxes!r}")
    no_box = [vid for vid in ids if vid not in boxes]
    if no_box:
        raise DatasetError(f"'{name}': {len(no_box)} of {len(ids)} ids have no box annotation (first: {no_box[:5]})")
    ids, missing = check_ids(ids, _pair_paths(pair_dir), d.skip_missing, what=f"evaluation set {name}")
    if missing:
        log.warning("evaluation set %s: %d ids with missing files are left out (data.skip_missing=true); "
                    "its numbers are not comparable to the paper's", name, len(missing))
    return AVPairs(ids, pair_dir, d.audio, d.image_size, train=False, boxes=boxes, box_mode=s.boxes,
                   cache_dir=d.cache_dir)

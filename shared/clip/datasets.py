"""CoOp's few-shot datasets in their official on-disk layout, a generic image-folder dataset, and a
torch Dataset over a list of images.

    ds = load_dataset("DescribableTextures", "/data/coop")   # or the short name "dtd"
    ds.train, ds.val, ds.test   # lists of Datum(impath, label, classname), in split-file order
    ds.classnames               # by label, underscores replaced by spaces

Layouts (under the data root; CoOp's DATASETS.md):

    caltech-101/101_ObjectCategories/          split_zhou_Caltech101.json
    oxford_pets/images/                        split_zhou_OxfordPets.json
    stanford_cars/{cars_train,cars_test}/      split_zhou_StanfordCars.json   (images dir = dataset dir)
    oxford_flowers/jpg/                        split_zhou_OxfordFlowers.json
    food-101/images/                           split_zhou_Food101.json
    fgvc_aircraft/images/                      variants.txt, images_variant_{train,val,test}.txt
    sun397/SUN397/                             split_zhou_SUN397.json
    dtd/images/                                split_zhou_DescribableTextures.json
    eurosat/2750/                              split_zhou_EuroSAT.json
    ucf101/UCF-101-midframes/                  split_zhou_UCF101.json
    imagenet/images/{train,val}/<wnid>/        classnames.txt ("<wnid> <class name>" per line); val is the test set

A ``split_zhou_*.json`` is ``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}``
with paths relative to the images dir and 0-based labels. Images are identified by these paths;
nothing depends on the data root being named ``data`` (the official code's path-key trap).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.clip.templates import clean_classname, template_for
from shared.data.images import load_image

HOW_TO_GET = ("See CoOp's DATASETS.md (github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md) for the download "
              "links of the images and of the split_zhou_*.json files.")


@dataclass(frozen=True)
class Datum:
    impath: str
    label: int
    classname: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str            # CoOp's class name, also the key of the zero-shot template
    dataset_dir: str     # under the data root
    image_dir: str       # under dataset_dir ('' = the dataset dir itself)
    split_file: str | None
    kind: str = "split_json"   # split_json | fgvc_aircraft | imagenet | image_folder
    num_classes: int | None = None


SPECS = {s.name: s for s in [
    DatasetSpec("Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", num_classes=100),
    DatasetSpec("OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json", num_classes=37),
    DatasetSpec("StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json", num_classes=196),
    DatasetSpec("OxfordFlowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", num_classes=102),
    DatasetSpec("Food101", "food-101", "images", "split_zhou_Food101.json", num_classes=101),
    DatasetSpec("FGVCAircraft", "fgvc_aircraft", "images", None, kind="fgvc_aircraft", num_classes=100),
    DatasetSpec("SUN397", "sun397", "SUN397", "split_zhou_SUN397.json", num_classes=397),
    DatasetSpec("DescribableTextures", "dtd", "images", "split_zhou_DescribableTextures.json", num_classes=47),
    DatasetSpec("EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json", num_classes=10),
    DatasetSpec("UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", num_classes=101),
    DatasetSpec("ImageNet", "imagenet", "images", None, kind="imagenet", num_classes=1000),
]}
# CoOp/PTNL config names (configs/datasets/ss<name>.yaml) -> CoOp class names
ALIASES = {"caltech101": "Caltech101", "oxford_pets": "OxfordPets", "stanford_cars": "StanfordCars",
           "oxford_flowers": "OxfordFlowers", "flowers102": "OxfordFlowers", "food101": "Food101",
           "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DescribableTextures",
           "eurosat": "EuroSAT", "ucf101": "UCF101", "imagenet": "ImageNet"}


@dataclass
class FewShotDataset:
    name: str
    root: Path
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    classnames: list[str] = field(default_factory=list)
    template: str = "a photo of a {}."

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def split(self, which: str) -> list[Datum]:
        if which not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {which!r}")
        return getattr(self, which)


def resolve_name(name: str) -> str:
    return ALIASES.get(name.lower().removeprefix("ss"), name) if name not in SPECS else name


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}. {HOW_TO_GET}")
    return path


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}. {HOW_TO_GET}")
    return path


def read_split(split_file: str | os.PathLike, image_dir: str | os.PathLike) -> dict[str, list[Datum]]:
    """A CoOp ``split_zhou_*.json`` as {train, val, test} lists of Datum with absolute paths."""
    split_file, image_dir = Path(split_file), Path(image_dir)
    _need_file(split_file, "split file")
    try:
        data = json.loads(split_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{split_file}: not valid JSON ({e})") from e
    out = {}
    for which in ("train", "val", "test"):
        if which not in data:
            raise ValueError(f"{split_file}: no '{which}' list (keys: {sorted(data)})")
        items = []
        for i, entry in enumerate(data[which]):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                raise ValueError(f"{split_file}: {which}[{i}] is {entry!r}, expected [relpath, label, classname]")
            rel, label, cname = entry
            items.append(Datum(str(image_dir / rel), int(label), clean_classname(str(cname))))
        out[which] = items
    return out


def _classnames(items: list[Datum]) -> list[str]:
    names: dict[int, str] = {}
    for d in items:
        names.setdefault(d.label, d.classname)
    labels = sorted(names)
    if labels != list(range(len(labels))):
        missing = sorted(set(range(max(labels) + 1)) - set(labels))
        raise ValueError(f"labels are not 0..{max(labels)}; missing {missing[:10]}")
    return [names[i] for i in labels]


def _read_fgvc(dataset_dir: Path, image_dir: Path) -> dict[str, list[Datum]]:
    variants = [ln.strip() for ln in _need_file(dataset_dir / "variants.txt", "FGVCAircraft variants.txt")
                .read_text().splitlines() if ln.strip()]
    index = {v: i for i, v in enumerate(variants)}
    out = {}
    for which in ("train", "val", "test"):
        f = _need_file(dataset_dir / f"images_variant_{which}.txt", f"FGVCAircraft {which} list")
        items = []
        for ln in f.read_text().splitlines():
            if not ln.strip():
                continue
            img, variant = ln.strip().split(" ", 1)
            if variant not in index:
                raise ValueError(f"{f}: variant {variant!r} is not in variants.txt")
            items.append(Datum(str(image_dir / f"{img}.jpg"), index[variant], variant))
        out[which] = items
    return out


_IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def _scan_class_folders(split_dir: Path, classes: list[str], names: dict[str, str] | None = None) -> list[Datum]:
    items = []
    for label, c in enumerate(classes):
        d = split_dir / c
        if not d.is_dir():
            continue
        for p in sorted(os.scandir(d), key=lambda e: e.name):
            if p.is_file() and not p.name.startswith(".") and Path(p.name).suffix.lower() in _IMG_EXT:
                items.append(Datum(str(d / p.name), label, (names or {}).get(c, clean_classname(c))))
    return items


def _read_imagenet(dataset_dir: Path, image_dir: Path) -> dict[str, list[Datum]]:
    names = {}
    for ln in _need_file(dataset_dir / "classnames.txt", "ImageNet classnames.txt").read_text().splitlines():
        if ln.strip():
            wnid, name = ln.strip().split(" ", 1)
            names[wnid] = name
    train_dir = _need_dir(image_dir / "train", "ImageNet train folder")
    val_dir = _need_dir(image_dir / "val", "ImageNet val folder")
    wnids = sorted(e.name for e in os.scandir(train_dir) if e.is_dir() and not e.name.startswith("."))
    missing = [w for w in wnids if w not in names]
    if missing:
        raise ValueError(f"{dataset_dir / 'classnames.txt'} has no name for {missing[:5]}")
    test = _scan_class_folders(val_dir, wnids, names)
    return {"train": _scan_class_folders(train_dir, wnids, names), "val": test, "test": test}


def read_image_folder(root: str | os.PathLike) -> dict[str, list[Datum]]:
    """Generic layout ``<root>/{train,val,test}/<class>/<image>``; classes are the sorted folder
    names of train/, labels their index; val/ may be missing (then val = test)."""
    root = Path(root)
    train_dir = _need_dir(root / "train", "image-folder train split")
    classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"{train_dir}: no class folders")
    test = _scan_class_folders(_need_dir(root / "test", "image-folder test split"), classes)
    val = _scan_class_folders(root / "val", classes) if (root / "val").is_dir() else test
    return {"train": _scan_class_folders(train_dir, classes), "val": val, "test": test}


def load_dataset(name: str, root: str | os.PathLike, dataset_dir: str | None = None, image_dir: str | None = None,
                 split_file: str | None = None, template: str | None = None,
                 readme: str | None = None) -> FewShotDataset:
    """One of CoOp's eleven datasets (by its CoOp or PTNL config name), or a custom one: a CoOp-style
    split file over an images folder (give dataset_dir, image_dir and split_file), or
    ``name="ImageFolder"`` with ``dataset_dir`` in the generic layout. ``readme``: the calling project's
    README, named in a missing-file error as where its data layout is described."""
    try:
        return _load_dataset(name, root, dataset_dir, image_dir, split_file, template)
    except FileNotFoundError as e:
        if readme is None:
            raise
        raise FileNotFoundError(f"{e} The layout this project reads: {readme}#data") from None


def _load_dataset(name, root, dataset_dir, image_dir, split_file, template) -> FewShotDataset:
    root = Path(root).expanduser()
    name = resolve_name(name)
    spec = SPECS.get(name)
    if spec is None:
        kind = "image_folder" if name == "ImageFolder" else "split_json"
        if dataset_dir is None or (kind == "split_json" and (image_dir is None or split_file is None)):
            raise ValueError(f"unknown dataset {name!r}: known are {', '.join(SPECS)}; a custom dataset needs "
                             "data.dataset_dir, data.image_dir and data.split_file (or name ImageFolder + dataset_dir)")
        spec = DatasetSpec(name, dataset_dir, image_dir or "", split_file, kind=kind)
    ddir = _need_dir(root / (dataset_dir or spec.dataset_dir), f"{name} dataset folder")
    idir = ddir / (image_dir if image_dir is not None else spec.image_dir)
    if spec.kind == "image_folder":
        splits = read_image_folder(ddir)
    else:
        _need_dir(idir, f"{name} images folder")
        if spec.kind == "split_json":
            splits = read_split(ddir / (split_file or spec.split_file), idir)
        elif spec.kind == "fgvc_aircraft":
            splits = _read_fgvc(ddir, idir)
        else:
            splits = _read_imagenet(ddir, idir)
    if not splits["train"] or not splits["test"]:
        raise ValueError(f"{ddir}: empty train or test split")
    classnames = _classnames(splits["train"])
    if spec.num_classes is not None and len(classnames) != spec.num_classes:
        raise ValueError(f"{ddir}: {len(classnames)} classes in the train split, {name} has {spec.num_classes}")
    return FewShotDataset(name=name, root=ddir, train=splits["train"], val=splits["val"], test=splits["test"],
                          classnames=classnames, template=template or template_for(name))


def labels_of(items: list[Datum]) -> np.ndarray:
    return np.array([d.label for d in items], dtype=np.int64)


class ImageListDataset(Dataset):
    """Images from a list of Datum, with labels that may differ from the true ones (noisy labels).

    Items are plain indices or ``(index, seed)`` pairs from ``shared.data.sampling.ResumableSampler``;
    the seed drives the random transform, so a resumed run sees the same augmentations.
    """

    def __init__(self, items: list[Datum], transform, labels: list[int] | np.ndarray | None = None):
        self.items = list(items)
        self.transform = transform
        self.labels = [d.label for d in self.items] if labels is None else [int(x) for x in labels]
        if len(self.labels) != len(self.items):
            raise ValueError(f"{len(self.items)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item):
        idx, seed = item if isinstance(item, tuple) else (item, None)
        d = self.items[idx]
        img = load_image(d.impath)
        if seed is None:
            x = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed % (2 ** 63 - 1))
                x = self.transform(img)
        return {"image": x, "label": self.labels[idx], "true_label": d.label, "index": idx}

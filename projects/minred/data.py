"""Stream datasets in the official formats, the SimSiam / MoCo-v2 augmentation, and evaluation sets.

Training sets (``data.dataset``), all returning ``{"views": [v1, v2], "label", "index"}`` for an
``(index, seed)`` item (the seed fixes the augmentation, so a resumed run sees the same views):

- ``flickr``: gzipped TSV lines ``flickr_id <tab> url <tab> images/a/b/c/abcd/<name>`` under ``data.root``;
- ``image_list``: lines ``path [label]`` (KrishnaCam's frame list, ImageNet-21K split lists);
- ``memmap``: numpy memmap of fixed-length byte strings (``fn_dtype`` S120, ``num_files`` entries,
  every ``subsample``-th kept), the official continual-ImageNet / Flickr lists;
- ``kinetics``: ``kinetics_filelist.txt`` lines ``dir nframes``; frames ``<root>/<dir>/{i:03d}.jpeg``
  (1-based); item ``video * n_seq + k`` is the k-th of ``n_seq`` frames drawn from the video
  (``random``: any frame; ``consecutive``: from a random start);
- ``fashion_mnist``: the real Fashion-MNIST training set (demo).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset
from torchvision import transforms as T

from shared.data import fashion_mnist
from shared.data.audio import MediaError
from shared.data.image_datasets import ArrayImages, seeded
from shared.data.images import load_image
from shared.data.robust import BadSample
from shared.data.ssl_augment import IMAGENET_MEAN, IMAGENET_STD
from shared.data.sampling import sample_seed

FMNIST_MEAN, FMNIST_STD = (0.2860,) * 3, (0.3530,) * 3


# -- augmentation --------------------------------------------------------------------------------
class GaussianBlur:
    """PIL Gaussian blur with sigma ~ U(sigma_min, sigma_max) (SimCLR / SimSiam), drawn from torch's RNG."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        s = float(torch.empty(1).uniform_(self.sigma[0], self.sigma[1]))
        return img.filter(ImageFilter.GaussianBlur(radius=s))


class ToRGB:
    def __call__(self, img):
        return img.convert("RGB")


class TwoViews:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return [self.transform(img), self.transform(img)]


def simsiam_augment(size: int = 224, crop_min: float = 0.2, blur_sigma=(0.1, 2.0), blur_p: float = 0.5,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD) -> TwoViews:
    """The official augmentation: RandomResizedCrop(scale 0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8,
    grayscale p 0.2, Gaussian blur p 0.5, flip; two views of the same image."""
    return TwoViews(T.Compose([
        ToRGB(), T.RandomResizedCrop(size, scale=(crop_min, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
        T.RandomApply([GaussianBlur(tuple(blur_sigma))], p=blur_p), T.RandomHorizontalFlip(),
        T.ToTensor(), T.Normalize(mean, std)]))


def eval_transform(size: int = 224, resize: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Resize(256) + CenterCrop(224) as the official linear evaluation (resize = size * 8 / 7)."""
    return T.Compose([ToRGB(), T.Resize(resize or int(round(size * 8 / 7))), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean, std)])


# -- list readers --------------------------------------------------------------------------------
def _require_file(path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p} (see projects/minred/README.md, 'Data')")
    return p


def read_flickr_list(path) -> list[str]:
    """Relative image paths of a gzipped Flickr TSV list (third column)."""
    out = []
    with gzip.open(_require_file(path, "Flickr list"), "rt") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                raise ValueError(f"{path}:{n}: expected 'flickr_id<TAB>url<TAB>path', got {line[:120]!r}")
            out.append(parts[2])
    return out


def read_image_list(path) -> tuple[list[str], list[int] | None]:
    """``path`` or ``path label`` per line; labels all present or all absent."""
    paths, labels = [], []
    for n, line in enumerate(_require_file(path, "image list").read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].lstrip("-").isdigit()):
            raise ValueError(f"{path}:{n}: expected 'path' or 'path label', got {line[:120]!r}")
        paths.append(parts[0])
        labels.append(int(parts[1]) if len(parts) == 2 else None)
    if not paths:
        raise ValueError(f"{path}: empty image list")
    if any(lb is None for lb in labels) and not all(lb is None for lb in labels):
        raise ValueError(f"{path}: some lines have a label and some do not")
    return paths, (None if labels[0] is None else labels)


def read_memmap_list(path, num_files: int, fn_dtype: str = "S120", subsample: int = 1) -> list[str]:
    mm = np.memmap(_require_file(path, "memmap list"), dtype=fn_dtype, mode="r", shape=(int(num_files),))
    return [s.decode("utf-8").strip() for s in mm[::max(1, int(subsample))]]


def check_files(paths: list[str], root: str, n_check: int, what: str) -> None:
    """Fail early, naming them, when evenly spaced list entries point at missing files."""
    if n_check == 0 or not paths:
        return
    pick = np.unique(np.linspace(0, len(paths) - 1, min(len(paths), n_check if n_check > 0 else len(paths))).astype(int))
    missing = [paths[i] for i in pick if not (Path(root) / paths[i]).is_file()]
    if missing:
        raise FileNotFoundError(f"{what}: {len(missing)} of {len(pick)} checked entries point at missing files under "
                                f"{root!r}, e.g. {missing[:3]}")


# -- datasets ------------------------------------------------------------------------------------
class ListImages(Dataset):
    def __init__(self, paths: list[str], labels, root: str, transform):
        self.paths, self.root, self.transform = paths, root, transform
        self.labels = torch.as_tensor(labels if labels is not None else [-1] * len(paths))

    def __len__(self):
        return len(self.paths)

    def load(self, idx: int, seed) -> Image.Image:
        return load_image(os.path.join(self.root, self.paths[idx]))

    def __getitem__(self, item):
        idx, seed = item if isinstance(item, tuple) else (item, None)
        try:
            img = self.load(idx, seed)
        except (MediaError, FileNotFoundError) as e:
            return BadSample(f"{idx}", str(e))
        return {"views": seeded(self.transform, img, seed), "label": self.labels[idx], "index": idx}


class KineticsFrames(ListImages):
    """Item ``v * n_seq + k``: a frame of video v. ``consecutive``: frames start + k from a random start
    per video (drawn from the run seed; the official draws it when frame 0 is loaded); ``random``: any frame."""

    def __init__(self, filelist: str, root: str, transform, n_seq: int = 64, sampling: str = "random",
                 fname_fmt: str = "{:03d}.jpeg", seed: int = 0, check: int = 1000):
        if sampling not in ("random", "consecutive"):
            raise ValueError(f"data.seq_sampling must be random or consecutive, got {sampling!r}")
        dirs, nframes = [], []
        for n, line in enumerate(_require_file(filelist, "Kinetics frame list").read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) < 1:
                raise ValueError(f"{filelist}:{n}: expected 'dir nframes', got {line[:120]!r}")
            dirs.append(parts[0])
            nframes.append(int(parts[1]))
        self.dirs, self.nframes, self.n_seq, self.sampling, self.fmt = dirs, nframes, n_seq, sampling, fname_fmt
        self.run_seed = seed
        super().__init__([f"{d}/{fname_fmt.format(1)}" for d in dirs], None, root, transform)
        check_files(self.paths, root, check, "Kinetics frame list")
        self.labels = torch.arange(len(dirs)).repeat_interleave(n_seq)  # the video id of every item

    def __len__(self):
        return len(self.dirs) * self.n_seq

    def frame_path(self, idx: int, seed) -> str:
        v, k = divmod(idx, self.n_seq)
        n = self.nframes[v]
        if self.sampling == "random":
            frame = int(np.random.default_rng(seed if seed is not None else sample_seed(self.run_seed, idx)).integers(n))
        else:
            start = int(np.random.default_rng(sample_seed(self.run_seed, v)).integers(max(n - self.n_seq - 1, 1)))
            frame = min(start + k, n - 1)
        return os.path.join(self.root, self.dirs[v], self.fmt.format(frame + 1))

    def load(self, idx, seed):
        return load_image(self.frame_path(idx, seed))


def train_set(cfg) -> tuple[Dataset, np.ndarray | None]:
    """(dataset, labels or None): the labels order class-sequential streams and feed the demo's plots."""
    d = cfg.data
    if d.dataset == "fashion_mnist":
        images, labels = fashion_mnist.load("train", d.root or None, download=d.download)
        if d.train_subset:
            keep = np.sort(np.random.default_rng(cfg.run.seed).permutation(len(images))[:d.train_subset])
            images, labels = images[keep], labels[keep]
        aug = simsiam_augment(d.img_size, d.crop_min, d.blur_sigma, d.blur_p, FMNIST_MEAN, FMNIST_STD)
        return ArrayImages(images, labels, aug), labels
    aug = simsiam_augment(d.img_size, d.crop_min, d.blur_sigma, d.blur_p)
    if d.dataset == "kinetics":
        return KineticsFrames(d.train_list, d.root, aug, d.n_seq_samples, d.seq_sampling, d.fname_fmt, cfg.run.seed,
                              d.check_files), None
    if d.dataset == "flickr":
        paths, labels = read_flickr_list(d.train_list), None
    elif d.dataset == "image_list":
        paths, labels = read_image_list(d.train_list)
    elif d.dataset == "memmap":
        paths, labels = read_memmap_list(d.train_list, d.num_files, d.fn_dtype, d.subsample), None
    else:
        raise ValueError(f"data.dataset must be fashion_mnist, flickr, image_list, memmap or kinetics, got {d.dataset!r}")
    check_files(paths, d.root, d.check_files, f"{d.dataset} list {d.train_list}")
    return ListImages(paths, labels, d.root, aug), (np.asarray(labels) if labels is not None else None)


def eval_sets(cfg, name: str):
    """(train, test) labelled sets of one evaluation (``eval.sets.<name>``) with the evaluation transform."""
    d = cfg.data
    if name == "fashion_mnist":
        tf = T.Compose([ToRGB(), T.Resize(d.img_size), T.ToTensor(), T.Normalize(FMNIST_MEAN, FMNIST_STD)])
        out = []
        for split, size in (("train", cfg.eval.train_size), ("test", cfg.eval.test_size)):
            images, labels = fashion_mnist.load(split, d.root or None, download=d.download)
            if size and size < len(images):
                keep = np.sort(np.random.default_rng(cfg.run.seed + 1).permutation(len(images))[:size])
                images, labels = images[keep], labels[keep]
            out.append(ArrayImages(images, labels, tf))
        return out
    spec = cfg.eval.sets.get(name)
    if spec is None:
        raise ValueError(f"no evaluation set {name!r} in eval.sets (have {sorted(cfg.eval.sets)})")
    tf = eval_transform(d.img_size)
    out = []
    for key in ("train_list", "val_list"):
        paths, labels = read_image_list(spec[key])
        if labels is None:
            raise ValueError(f"eval.sets.{name}.{key}: evaluation lists need 'path label' lines")
        check_files(paths, spec["root"], d.check_files, f"eval.sets.{name}.{key}")
        out.append(ListImages(paths, labels, spec["root"], tf))
    return out


def probe_sets(cfg) -> dict:
    """Every ``eval.datasets`` entry as ``{name: (train, test, num_classes, epochs, lr)}``, what
    ``probes.evaluate_backbone`` takes (epochs / lr: the set's own probe settings; None: eval.lincls_epochs / lincls_lr)."""
    out = {}
    for name in cfg.eval.datasets:
        tr, te = eval_sets(cfg, name)
        spec = {} if name == "fashion_mnist" else cfg.eval.sets[name]
        nc = 10 if name == "fashion_mnist" else int(spec["num_classes"])
        out[name] = (tr, te, nc, spec.get("epochs"), spec.get("lr"))
    return out

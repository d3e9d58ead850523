"""Golden rankings of a dataset split on disk, keyed by dataset-relative image ids (never absolute
paths: the official JSON keys are the authors' absolute paths), with the config and the model that
made them.

    {"format": "patch_ranking/golden", "version": 1,
     "dataset": "OxfordPets", "split": "train", "num_patches": 196, "grid": [14, 14],
     "model": {"arch": "ViT-B-16", "weights": "...", "fingerprint": "<sha1 of the image tower's weights>"},
     "golden": {"layer": 3, "block_size": 2, "tokens_per_step": 4, "steps": 20, "score": "similarity", ...},
     "images": {"<path relative to the dataset folder>": {"order": [...N], "removed_step": [...N], "score": [...N]}}}

``order`` lists every patch, most important first (the official ``patch_index``: least important at
the tail). Loading checks the dataset, the model fingerprint and the patch count against what the
caller expects, so rankings made with another model or for another dataset are an error.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from shared.checkpoint import atomic_write_text
from shared.clip.datasets import Datum, ImageListDataset
from shared.logging import progress
from projects.patch_ranking.golden import GoldenConfig, golden_ranking
from projects.patch_ranking.pruning import grid_size, num_patches

FORMAT, VERSION = "patch_ranking/golden", 1


def model_fingerprint(model: nn.Module) -> str:
    """sha1 over the image tower's parameters (names, shapes, fp32 bytes): identifies the weights."""
    h = hashlib.sha1()
    for name, p in model.visual.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def image_id(impath: str, dataset_root: str | os.PathLike) -> str:
    """The image's path relative to the dataset folder, with '/' separators."""
    rel = os.path.relpath(impath, dataset_root)
    if rel.startswith(".."):
        raise ValueError(f"{impath} is not inside the dataset folder {dataset_root}")
    return Path(rel).as_posix()


class Rankings:
    def __init__(self, meta: dict, images: dict[str, dict]):
        self.meta, self.images = meta, images

    @property
    def num_patches(self) -> int:
        return int(self.meta["num_patches"])

    def order(self, ids: list[str]) -> torch.Tensor:
        """[len(ids), N] orders of the given image ids; a missing id is an error."""
        missing = [i for i in ids if i not in self.images]
        if missing:
            raise KeyError(f"{len(missing)} images have no golden ranking in this file (dataset "
                           f"{self.meta['dataset']}/{self.meta['split']}), e.g. {missing[:3]}; rank them first")
        return torch.tensor([self.images[i]["order"] for i in ids], dtype=torch.long)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({**self.meta, "images": self.images}) + "\n")
        return path


def new_rankings(dataset: str, split: str, model: nn.Module, arch: str, weights: str, golden: GoldenConfig) -> Rankings:
    meta = {"format": FORMAT, "version": VERSION, "dataset": dataset, "split": split,
            "num_patches": num_patches(model.visual), "grid": list(grid_size(model.visual)),
            "model": {"arch": arch, "weights": weights, "fingerprint": model_fingerprint(model)},
            "golden": golden.to_dict()}
    return Rankings(meta, {})


def load_rankings(path: str | os.PathLike, dataset: str | None = None, model: nn.Module | None = None,
                  split: str | None = None) -> Rankings:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"golden rankings not found: {path} (make them with "
                                "`python -m projects.patch_ranking.rank --config ...`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a golden-ranking file (format {data.get('format') if isinstance(data, dict) else None!r}"
                         f", expected {FORMAT!r}); the official JSON keyed by absolute paths is not read")
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: version {data.get('version')}, this code reads version {VERSION}")
    if dataset is not None and data["dataset"] != dataset:
        raise ValueError(f"{path} ranks dataset {data['dataset']!r}, not {dataset!r}")
    if split is not None and data["split"] != split:
        raise ValueError(f"{path} ranks the {data['split']!r} split, not {split!r}")
    if model is not None:
        if data["num_patches"] != num_patches(model.visual):
            raise ValueError(f"{path} ranks {data['num_patches']} patches; this model has {num_patches(model.visual)}")
        fp = model_fingerprint(model)
        if data["model"]["fingerprint"] != fp:
            raise ValueError(f"{path} was made with another model ({data['model']['arch']}, {data['model']['weights']}; "
                             f"fingerprint {data['model']['fingerprint'][:10]}), not with these weights ({fp[:10]})")
    images = data.pop("images")
    n = data["num_patches"]
    for k, v in images.items():
        if sorted(v.get("order", [])) != list(range(n)):
            raise ValueError(f"{path}: the order of {k!r} is not a permutation of 0..{n - 1}")
    return Rankings(data, images)


@torch.no_grad()
def rank_items(model: nn.Module, items: list[Datum], dataset_root: str | os.PathLike, transform, golden: GoldenConfig,
               rankings: Rankings, classifier: torch.Tensor | None = None, batch_size: int = 16,
               num_workers: int = 0, device: torch.device | str = "cpu", desc: str = "golden ranking") -> Rankings:
    """Rank ``items`` (skipping ids already in ``rankings``: a restarted job continues) and return
    ``rankings`` filled in."""
    device = torch.device(device)
    ids = [image_id(d.impath, dataset_root) for d in items]
    todo = [i for i, k in enumerate(ids) if k not in rankings.images]
    if not todo:
        return rankings
    ds = ImageListDataset([items[i] for i in todo], transform)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    dtype = next(model.parameters()).dtype
    for batch in progress(loader, desc=desc):
        out = golden_ranking(model, batch["image"].to(device, dtype), golden, labels=torch.as_tensor(batch["label"]),
                             classifier=classifier)
        for j, idx in enumerate(batch["index"].tolist()):
            rankings.images[ids[todo[idx]]] = {"order": out["order"][j].tolist(),
                                               "removed_step": out["removed_step"][j].tolist(),
                                               "score": [round(float(s), 6) for s in out["score"][j]]}
    return rankings

"""PTNL's data: the CoOp dataset of the config, the zero-shot pass over its train split ("get
info", cached per dataset and backbone), and the training set of the run's method: the noisy
few-shot set (coop, linear_probe) or the pseudo-labelled one (upl, robust_upl)."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from shared.checkpoint import atomic_torch_save
from shared.clip.datasets import FewShotDataset, ImageListDataset, labels_of, load_dataset
from shared.clip.models import load_clip
from shared.clip.transforms import clip_test_transform, coop_train_transform
from shared.clip.zeroshot import encode_images, logit_scale, text_classifier, zero_shot_logits
from projects.ptnl.noise import FewShotSelection, num_fp_for, random_k_per_class, sample_noisy_fewshot, upl_select_topk

log = logging.getLogger(__name__)


def build_dataset(cfg) -> FewShotDataset:
    d = cfg.data
    return load_dataset(d.dataset, d.root, dataset_dir=d.dataset_dir, image_dir=d.image_dir,
                        split_file=d.split_file, template=d.template, readme="projects/ptnl/README.md")


def load_cfg_clip(cfg, device, arch: str | None = None):
    c = cfg.clip
    return load_clip(arch or c.arch, c.pretrained, precision=c.precision, device=device, quick_gelu=c.quick_gelu,
                     cache_dir=c.cache_dir)


def eval_loader(items, transform, cfg, labels=None, device=None) -> DataLoader:
    return DataLoader(ImageListDataset(items, transform, labels), batch_size=cfg.eval.batch_size, shuffle=False,
                      num_workers=cfg.data.num_workers, pin_memory=device is not None and device.type == "cuda")


def train_transform(cfg, image_size: int):
    return coop_train_transform(image_size, scale=tuple(cfg.data.train_scale), flip=cfg.data.flip)


def _zs_cache_path(cfg, ds: FewShotDataset, arch: str) -> Path:
    root = Path(cfg.zeroshot.cache_dir) if cfg.zeroshot.cache_dir else \
        Path(cfg.run.root) / cfg.run.project / "_zeroshot"
    key = json.dumps([str(ds.root.resolve()), ds.name, arch, str(cfg.clip.pretrained), cfg.clip.precision,
                      str(cfg.clip.quick_gelu), ds.template, len(ds.train)])
    return root / f"{ds.name}_{arch}_{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"


def zero_shot_train_probs(cfg, ds: FewShotDataset, device: torch.device, arch: str | None = None,
                          bundle=None) -> np.ndarray:
    """UPL's "get info": zero-shot CLIP softmax probabilities [N_train, C] on the train split (CLIP
    test transform, the dataset's template). Cached on disk; computed once per dataset and backbone."""
    arch = arch or cfg.clip.arch
    path = _zs_cache_path(cfg, ds, arch)
    if path.is_file():
        return torch.load(path, weights_only=False)["probs"]
    if bundle is None or bundle.name != arch:
        bundle = load_cfg_clip(cfg, device, arch)
    model = bundle.model.to(device).eval()
    clf = text_classifier(model, bundle.tokenizer, ds.classnames, ds.template, device)
    feats, labels = encode_images(model, eval_loader(ds.train, bundle.preprocess, cfg, device=device), device,
                                  cfg.train.amp, desc=f"zero-shot {ds.name} train ({arch})")
    probs = torch.softmax(zero_shot_logits(feats, clf.cpu(), logit_scale(model)), dim=-1).numpy()
    acc = float((probs.argmax(1) == labels.numpy()).mean())
    atomic_torch_save({"probs": probs, "labels": labels.numpy(), "accuracy": acc, "arch": arch}, path)
    log.info("zero-shot %s on the %d train images: %.2f%% (cached in %s)", arch, len(ds.train), 100 * acc, path)
    return probs


def select_train(cfg, ds: FewShotDataset, device: torch.device, bundle=None) -> FewShotSelection:
    """The run's training set (indices into ds.train and the labels trained on)."""
    true = labels_of(ds.train)
    method, fs = cfg.method, cfg.fewshot
    if method in ("coop", "linear_probe"):
        num_fp = num_fp_for(fs.noise_rate, fs.shots)
        zs = zero_shot_train_probs(cfg, ds, device, bundle=bundle) \
            if fs.noise_type == "confusion" and num_fp > 0 else None
        return sample_noisy_fewshot(true, ds.num_classes, fs.shots, num_fp, cfg.run.seed, fs.noise_type, zs,
                                    fp_replacement=fs.fp_replacement, dedup=fs.dedup)
    if method in ("upl", "robust_upl"):
        archs = list(cfg.pseudo.archs) or [cfg.clip.arch]
        probs = [zero_shot_train_probs(cfg, ds, device, a, bundle) for a in archs]
        if method == "upl":
            return upl_select_topk(probs, cfg.pseudo.k, true)
        return random_k_per_class(probs, cfg.pseudo.k, cfg.run.seed, true)
    raise ValueError(f"method {method!r} has no training set")


def test_transform(image_size: int):
    return clip_test_transform(image_size)

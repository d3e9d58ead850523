"""Evaluation: zero-shot top-1 on the test split at each keep ratio, for every method, with the image
encoder's GFLOPs (predictor included; torch's FlopCounterMode, one image) and its images/s.

Rows (results.json ``eval``): method, keep ratio, kept patch tokens, top-1 (%), images evaluated,
GFLOPs, images/s. ``golden`` (the oracle) is evaluated on the test images that have a golden
ranking (``golden.test_images``; all of them by default). ``predictor+tokens`` / ``none+tokens``
are the model with the Phase-III learned tokens.

Eval only, from a finished run folder (the run's pipeline, train.py, with only its eval phase; rankings and
predictor.pt are read from the run folder; the learned-token rows need the prompts phase):

    python -m projects.patch_ranking.train --config ... [key=value ...] phases=[eval]
"""
from __future__ import annotations

import logging

import torch

from shared.amp import autocast, fp32_metrics
from shared.benchmark import count_flops, time_fn
from shared.logging import progress
from projects.patch_ranking.data import loader, test_transform
from projects.patch_ranking.model import PrunedCLIP
from projects.patch_ranking.rankings import Rankings, image_id

log = logging.getLogger(__name__)


def batches(model: PrunedCLIP, items, cfg, device):
    """The test batches: a loader, or (``eval.preload``) a list decoded once and reused by every row."""
    dl = loader(items, test_transform(model.image_size), int(cfg.eval.batch_size), cfg, device)
    return list(progress(dl, desc="decode test images")) if cfg.eval.preload else dl


@torch.no_grad()
def accuracy(model: PrunedCLIP, data, items, ds, cfg, device, rankings: Rankings | None = None,
             desc: str = "eval") -> float:
    correct = total = 0
    for batch in progress(data, desc=desc):
        x = batch["image"].to(device, non_blocking=True)
        order = None
        if rankings is not None:
            order = rankings.order([image_id(items[i].impath, ds.root) for i in batch["index"].tolist()])
        with autocast(device, cfg.train.amp):
            feats = model.image_features(x, order)
        with fp32_metrics():
            pred = (feats.float() @ model.text_features().float().t()).argmax(-1).cpu()
        correct += int((pred == torch.as_tensor(batch["label"])).sum())
        total += len(pred)
    return 100.0 * correct / max(total, 1)


def count_encoder_flops(fn) -> float:
    """FLOPs of ``fn()`` without autograd (shared.benchmark.count_flops counts attention, the fused
    eval-mode MultiheadAttention path included)."""
    with torch.no_grad():
        return count_flops(fn)


@torch.no_grad()
def cost(model: PrunedCLIP, x: torch.Tensor, cfg, device, speed: bool) -> dict:
    """GFLOPs per image (FlopCounterMode on one image) and images/s on the batch ``x``."""
    order = torch.arange(model.n).expand(x.shape[0], -1)
    out = {"gflops": count_encoder_flops(lambda: model.encode_image(x[:1], order[:1])) / 1e9}
    if speed:
        def fn():
            with autocast(device, cfg.train.amp):
                model.encode_image(x, order)
        t = time_fn(fn, device, warmup=2, repeats=int(cfg.eval.speed_repeats))
        out["images_per_s"] = t.items_per_s(x.shape[0])
    return out


def evaluate(model: PrunedCLIP, ds, cfg, device, test_rankings: Rankings | None, prompts: bool = False) -> list[dict]:
    e = cfg.eval
    methods = ["predictor+tokens", "none+tokens"] if prompts else list(e.methods)
    ratios = [float(r) for r in e.keep_ratios] if len(model.stages) == 1 else [None]
    first = next(iter(loader(ds.test, test_transform(model.image_size), int(e.speed_batch), cfg, device)))
    x_speed = first["image"].to(device)
    golden_items = None
    if test_rankings is not None:
        ids = set(test_rankings.images)
        golden_items = [d for d in ds.test if image_id(d.impath, ds.root) in ids]
    saved_method, saved_stages = model.method, list(model.stages)
    rows, data = [], {}
    for r in ratios:
        for name in methods:
            method = name.split("+")[0]
            if method == "none" and r not in (None, 1.0) or method != "none" and r == 1.0:
                continue
            if method == "golden" and not golden_items:
                log.warning("no golden rankings of test images: the oracle row is skipped")
                continue
            if method == "predictor" and model.predictor is None or method in ("evit", "tome") and r is None:
                continue
            model.set_method(method, None if r is None or method == "none" else r)
            items, rk = (golden_items, test_rankings) if method == "golden" else (ds.test, None)
            if id(items) not in data:
                data[id(items)] = batches(model, items, cfg, device)
            acc = accuracy(model, data[id(items)], items, ds, cfg, device, rk, desc=f"{name} keep {r}")
            row = {"method": name, "keep_ratio": r, "kept_tokens": model.stages[0][1] if method != "none" else model.n,
                   "top1": acc, "images": len(items), **cost(model, x_speed, cfg, device, bool(e.speed))}
            log.info("%s", row)
            rows.append(row)
            model.stages = list(saved_stages)
    model.method, model.stages = saved_method, saved_stages
    return rows

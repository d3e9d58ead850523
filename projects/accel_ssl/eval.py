"""k-NN (DINO's weighted k-NN, k 20, T 0.07) and linear-probe evaluation of a frozen encoder."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from shared.amp import autocast
from shared.data.robust import collate_skipping_bad
from shared.logging import progress
from shared.metrics.knn import knn_accuracy
from shared.metrics.linear_probe import train_linear_probe
from projects.accel_ssl.data import eval_sets, num_classes


@torch.no_grad()
def extract(encoder, ds, device, batch_size: int, workers: int, desc: str, amp: str | None = "bf16"):
    encoder.eval()
    feats, labels = [], []
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping_bad)
    for batch in progress(loader, desc=desc):
        if "views" not in batch:
            continue
        x = batch["views"].to(device)
        with autocast(device, amp):  # features in the training precision; the k-NN itself in fp32
            feats.append(encoder(x).float().cpu())
        labels.append(batch["label"])
    return torch.cat(feats), torch.cat(labels)


def evaluate_encoder(encoder, cfg, device, linear_probe: bool | None = None, train_size=None, test_size=None) -> dict:
    """k-NN (and the linear probe if asked) on ``train_size`` / ``test_size`` images (default: eval.knn_*_size)."""
    e = cfg.eval
    train, test = eval_sets(cfg, train_size or e.knn_train_size, test_size or e.knn_test_size)
    ftr, ytr = extract(encoder, train, device, e.batch_size, cfg.data.num_workers, "features (train)", cfg.train.amp)
    fte, yte = extract(encoder, test, device, e.batch_size, cfg.data.num_workers, "features (test)", cfg.train.amp)
    c = num_classes(cfg)
    out = {"knn_top1": knn_accuracy(ftr, ytr, fte, yte, c, e.knn_k, e.knn_t), "n_knn_train": len(ytr),
           "n_test": len(yte)}
    if e.linear_probe if linear_probe is None else linear_probe:
        out["linear_top1"] = train_linear_probe(ftr, ytr, fte, yte, c, epochs=e.linear_probe_epochs)["top1"]
    return out

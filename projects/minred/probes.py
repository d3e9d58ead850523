"""Evaluation of the frozen backbone (official ``worker_lincls.py``), k-NN, and the continual metrics.

Linear classification: the pooled ResNet features (backbone in eval mode) are L2-normalised and fed
to a Linear layer (weights N(0, 0.01), bias 0) trained with SGD (momentum 0.9, no weight decay)
wrapped in LARC (trust coefficient 0.001, clip off), batch 1024, cosine lr per epoch, top-1 after the
last epoch. ImageNet: 10 epochs lr 3.0; iNat-2018: 20 epochs lr 12.0. Here the classifier is
trained on cached features of the evaluation crop (the official trains on RandomResizedCrop + flip
views of the images): a documented difference that makes the probe cheap.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from shared.amp import fp32_metrics
from shared.metrics.knn import knn_accuracy


class LARC:
    """apex.parallel.LARC around an optimizer: each parameter's gradient is scaled by
    trust * ||p|| / (||g|| + wd * ||p|| + eps) (``clip``: min(that / lr, 1)); parameters or gradients of
    norm 0 are left as they are; weight decay is folded into the gradient before the scaling."""

    def __init__(self, optimizer: torch.optim.Optimizer, trust_coefficient: float = 0.001, clip: bool = False,
                 eps: float = 1e-8):
        self.optim, self.trust, self.clip, self.eps = optimizer, trust_coefficient, clip, eps
        self.param_groups = optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True):
        self.optim.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self):
        saved_wd = []
        for group in self.optim.param_groups:
            wd = group.get("weight_decay", 0.0)
            saved_wd.append(wd)
            group["weight_decay"] = 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                p_norm, g_norm = torch.norm(p.data), torch.norm(p.grad.data)
                if p_norm != 0 and g_norm != 0:
                    adaptive = self.trust * p_norm / (g_norm + p_norm * wd + self.eps)
                    if self.clip:
                        adaptive = torch.clamp(adaptive / group["lr"], max=1.0)
                    p.grad.data += wd * p.data
                    p.grad.data *= adaptive
        self.optim.step()
        for group, wd in zip(self.optim.param_groups, saved_wd):
            group["weight_decay"] = wd


def lars_linear_probe(train_feats, train_labels, test_feats, test_labels, num_classes: int, epochs: int = 10,
                      lr: float = 3.0, batch_size: int = 1024, trust: float = 0.001, momentum: float = 0.9,
                      normalize: bool = True, seed: int = 0) -> dict:
    """Top-1 / top-5 of the official linear evaluation on cached features."""
    g = torch.Generator().manual_seed(seed)
    with fp32_metrics():
        xtr, xte = train_feats.float(), test_feats.float()
        if normalize:
            xtr, xte = F.normalize(xtr, dim=1), F.normalize(xte, dim=1)
        head = nn.Linear(xtr.shape[1], num_classes).to(xtr.device)
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        opt = LARC(torch.optim.SGD(head.parameters(), lr, momentum=momentum, weight_decay=0.0), trust)
        n = xtr.shape[0]
        for epoch in range(epochs):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size].to(xtr.device)
                loss = F.cross_entropy(head(xtr[idx]), train_labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            logits = head(xte)
            top5 = logits.topk(min(5, num_classes), dim=1)[1]
            return {"top1": float((top5[:, 0] == test_labels).float().mean()), "predictions": top5[:, 0],
                    "top5": float((top5 == test_labels[:, None]).any(1).float().mean()), "final_train_loss": float(loss)}


@torch.no_grad()
def extract(fn, dataset, device, batch_size: int = 256, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of a labelled dataset through ``fn`` (images -> features)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    for b in loader:
        x = b["views"].to(device)
        feats.append(fn(x).float().cpu())
        labels.append(b["label"])
    return torch.cat(feats), torch.cat(labels).long()


def evaluate_features(train, test, num_classes: int, cfg, epochs: int | None = None, lr: float | None = None) -> dict:
    """k-NN (weighted, k and T from the config) and the LARS linear probe of one feature set."""
    (xtr, ytr), (xte, yte) = train, test
    e = cfg.eval
    out = {"knn_top1": knn_accuracy(xtr, ytr, xte, yte, num_classes, k=e.knn_k, temperature=e.knn_t)}
    if e.linear_probe:
        lp = lars_linear_probe(xtr, ytr, xte, yte, num_classes, epochs=epochs or e.lincls_epochs, lr=lr or e.lincls_lr,
                               batch_size=e.lincls_batch_size, seed=cfg.run.seed)
        out.update({"linear_top1": lp["top1"], "linear_top5": lp["top5"], "_predictions": lp.get("predictions")})
    return out


def evaluate_backbone(model, cfg, device, sets, keep_predictions: bool = False) -> dict:
    """Frozen-backbone k-NN / linear probe on each (name, (train_set, test_set, num_classes, epochs, lr))."""
    was = model.training
    model.eval()
    out = {}
    try:
        for name, (tr, te, nc, epochs, lr) in sets.items():
            fn = model.backbone_features
            res = evaluate_features(extract(fn, tr, device, cfg.eval.batch_size),
                                    extract(fn, te, device, cfg.eval.batch_size), nc, cfg, epochs, lr)
            if keep_predictions:
                out[f"{name}/_predictions"] = res["_predictions"]
            out.update({f"{name}/{k}": v for k, v in res.items() if not k.startswith("_")})
    finally:
        model.train(was)
    return out


def continual_metrics(acc: list[list[float]], order: list[int] | None = None) -> dict:
    """Accuracy and forgetting along a continual stream of S splits.

    ``acc[c][k]``: accuracy on split k measured at the c-th checkpoint, the checkpoints being the ends of
    the splits in stream order (25 / 50 / 75 / 100 % for 4 equal splits); ``order[c]`` is the split
    learned in the c-th part (default 0, 1, 2, ...). Forgetting of split D_k after part j (k learned in
    part i < j) = acc[i][k] - acc[j][k], in absolute points: D_first has S-1 values, the last split none.
    ``mean_acc`` at checkpoint c is the mean over all splits (the evaluation covers every split's classes)."""
    s = len(acc)
    order = list(range(s)) if order is None else list(order)
    if sorted(order) != list(range(len(acc[0]))) or len(order) != s:
        raise ValueError(f"order {order} must be a permutation of the {len(acc[0])} splits, one per checkpoint")
    forgetting = {}
    for i, k in enumerate(order[:-1]):
        forgetting[f"D{k}"] = [acc[i][k] - acc[j][k] for j in range(i + 1, s)]
    return {"mean_acc": [sum(a) / len(a) for a in acc], "forgetting": forgetting}

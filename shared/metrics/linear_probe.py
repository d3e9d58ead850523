"""Linear probe of frozen features (MoCo v3 / DINO protocol on cached features): a linear layer
after a BatchNorm without affine parameters, SGD with momentum 0.9, no weight decay, cosine lr,
trained on the training split's features and scored on the test split's."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def train_linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                       test_labels: torch.Tensor, num_classes: int, epochs: int = 90, batch_size: int = 1024,
                       base_lr: float = 3.0, weight_decay: float = 0.0, seed: int = 0) -> dict:
    """Top-1 accuracy of a linear classifier; lr = base_lr * batch / 256 (MoCo v3: base 3 -> 12 at 1024)."""
    g = torch.Generator().manual_seed(seed)
    dim = train_feats.shape[1]
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, num_classes))
    nn.init.normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    lr = base_lr * batch_size / 256
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    n = train_feats.shape[0]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        head.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(head(train_feats[idx].float()), train_labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    head.eval()
    with torch.no_grad():
        acc = (head(test_feats.float()).argmax(1) == test_labels).float().mean().item()
    return {"top1": acc, "final_train_loss": loss.item()}

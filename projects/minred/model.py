"""SimSiam as the official ``simsiam.py`` builds it, and its optimiser and learning-rate rule.

- Encoder: a torchvision ResNet-18 / 50 (``zero_init_residual=True``) whose fc becomes the
  projector Linear(C, C, no bias)-BN-ReLU-Linear(C, C, no bias)-BN-ReLU-Linear(C, dim)-BN(affine=False);
  the last Linear's bias is frozen (it is followed by a BN).
- Predictor: Linear(dim, pred_dim, no bias)-BN-ReLU-Linear(pred_dim, dim).
- Loss per sample: -(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2; the batch loss is the mean.
- ``small_input`` (not official, for 28-32 px demo images): a 3x3 stride-1 stem without max-pool,
  as CIFAR ResNets do.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

ARCHS = {"resnet18": (512, 128), "resnet50": (2048, 512)}  # official (dim, pred_dim) per backbone


class SimSiam(nn.Module):
    def __init__(self, arch: str = "resnet50", dim: int | None = None, pred_dim: int | None = None,
                 small_input: bool = False):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {sorted(ARCHS)}, got {arch!r}")
        dim, pred_dim = dim or ARCHS[arch][0], pred_dim or ARCHS[arch][1]
        self.encoder = getattr(torchvision.models, arch)(num_classes=dim, zero_init_residual=True)
        if small_input:
            self.encoder.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.encoder.maxpool = nn.Identity()
        c = self.encoder.fc.weight.shape[1]
        last = self.encoder.fc
        self.encoder.fc = nn.Sequential(
            nn.Linear(c, c, bias=False), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
            nn.Linear(c, c, bias=False), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
            last, nn.BatchNorm1d(dim, affine=False))
        last.bias.requires_grad = False
        self.predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim),
                                       nn.ReLU(inplace=True), nn.Linear(pred_dim, dim))
        self.dim, self.feat_dim = dim, c

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        z1, z2 = self.encoder(x1), self.encoder(x2)
        return self.predictor(z1), self.predictor(z2), z1.detach(), z2.detach()

    @torch.no_grad()
    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled ResNet features (the projector skipped), what the linear evaluation reads."""
        fc = self.encoder.fc
        self.encoder.fc = nn.Identity()
        try:
            return self.encoder(x)
        finally:
            self.encoder.fc = fc


def build_model(cfg) -> SimSiam:
    """The SimSiam network a config describes, randomly initialised (``model.pretrained`` is loaded by
    ``main`` at the start of a new run)."""
    m = cfg.model
    return SimSiam(m.arch, m.dim, m.pred_dim, m.small_input)


def simsiam_loss(p1, p2, z1, z2) -> torch.Tensor:
    """Per-sample SimSiam loss (the buffer also records it)."""
    return -(F.cosine_similarity(p1, z2.detach(), dim=1) + F.cosine_similarity(p2, z1.detach(), dim=1)) * 0.5


def build_optimizer(model: SimSiam, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4,
                    fix_pred_lr: bool = True) -> torch.optim.SGD:
    """SGD over two groups; with ``fix_pred_lr`` the predictor keeps the initial lr."""
    groups = [{"params": [p for p in model.encoder.parameters() if p.requires_grad], "fix_lr": False},
              {"params": list(model.predictor.parameters()), "fix_lr": fix_pred_lr}]
    return torch.optim.SGD(groups, lr, momentum=momentum, weight_decay=weight_decay)


def learning_rate(init_lr: float, progress: float, schedule: str = "cos", exit_decay: float = 0.0,
                  epochs: float = 1.0, period: float = 3000, max_lr: float = 0.003, steps_per_epoch: int = 1) -> float:
    """The official ``adjust_learning_rate`` at ``progress`` = effective epoch / epochs, where the
    effective epoch of the k-th step (k from 1) is k / steps per epoch: cosine reaches 0 at the end of
    the stream. ``triangle``: cyclic between lr and max_lr with a period in steps. ``exit_decay`` > 0:
    an extra cosine decay over the last fraction of training."""
    epoch = progress * epochs
    if schedule == "constant":
        lr = init_lr
    elif schedule == "cos":
        lr = init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    elif schedule == "triangle":
        t = (epoch * steps_per_epoch) % period
        lr = init_lr + (t if t < period / 2 else period - t) / (period / 2.0) * (max_lr - init_lr)
    else:
        raise ValueError(f"optim.lr_schedule must be constant, cos or triangle, got {schedule!r}")
    if exit_decay > 0:
        start = epochs * (1.0 - exit_decay)
        if epoch > start:
            lr *= 0.5 * (1.0 + math.cos(math.pi * (epoch - start) / (epochs - start)))
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float, init_lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = init_lr if g.get("fix_lr") else lr

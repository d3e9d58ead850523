"""The demos' stand-in for ImageNet pre-training: a torchvision ResNet-18 trained as a classifier of
the pictures in an ImageFolder (one folder per class) and saved as a torchvision-style state dict, so
a demo config loads it where the paper loads ImageNet weights (no weights can be downloaded here).

    info = train_stand_in_classifier("data/x/objects", "data/x/resnet18.pth", image_size=112)

Training: RandomResizedCrop(scale 0.5-1, bicubic) + horizontal flip, ImageNet normalisation, Adam
with a one-cycle schedule (20 % warm-up), cross-entropy. A seeded hold-out of max(classes, 10 %)
pictures, read without augmentation, gives the reported accuracy.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms
from torchvision.models import resnet18

from shared.checkpoint import atomic_torch_save
from shared.data.ssl_augment import IMAGENET_MEAN, IMAGENET_STD
from shared.logging import progress


def train_stand_in_classifier(folder: str | Path, out: str | Path, image_size: int = 112, epochs: int = 4,
                              batch_size: int = 32, lr: float = 1e-3, seed: int = 0) -> dict:
    """Train and save (atomically) the classifier; returns {val_accuracy, n_val, n_train, classes, path}."""
    folder, out = Path(folder), Path(out)
    torch.manual_seed(seed)
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(0.5, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    val_tf = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor(), norm])
    ds = datasets.ImageFolder(str(folder), transform=train_tf)
    n_val = max(len(ds.classes), len(ds) // 10)
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    train_ds = Subset(ds, perm[n_val:])
    val_ds = Subset(datasets.ImageFolder(str(folder), transform=val_tf), perm[:n_val])
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"{folder}: {len(train_ds)} training pictures, fewer than one batch of {batch_size}")
    net = resnet18(num_classes=len(ds.classes))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader), pct_start=0.2)
    for epoch in range(epochs):
        net.train()
        for x, y in progress(loader, desc=f"pretrain {epoch + 1}/{epochs}"):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(val_ds, batch_size=64):
            correct += (net(x).argmax(1) == y).sum().item()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(net.state_dict(), out)
    return {"val_accuracy": correct / len(val_ds), "n_val": len(val_ds), "n_train": len(train_ds),
            "classes": ds.classes, "path": str(out)}

"""The demo's stand-in for ImageNet pre-training: a ResNet-18 classifier of the demo object
classes, trained on <root>/objects (ImageFolder layout) and saved as a torchvision-style state
dict that the demo config loads as ``model.image_weights`` and ``model.ogl_weights``.

EZ-VSL leans on its ImageNet-pretrained image encoder: trained from random initialisation on
small data it solves the contrastive task without learning to localize. So does the demo.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.models import resnet18

from shared.checkpoint import atomic_torch_save
from shared.logging import progress
from projects.ezvsl.data import IMAGENET_MEAN, IMAGENET_STD


def pretrain(root: str | Path, out: str | Path, image_size: int = 112, epochs: int = 3, batch_size: int = 32,
             lr: float = 1e-3, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    tf = transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(0.5, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ds = datasets.ImageFolder(str(Path(root) / "objects"), transform=tf)
    n_val = max(1, len(ds) // 10)
    train_ds, val_ds = torch.utils.data.random_split(ds, [len(ds) - n_val, n_val],
                                                     generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
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
    acc = correct / len(val_ds)
    atomic_torch_save(net.state_dict(), out)
    return {"val_accuracy": acc, "classes": ds.classes, "path": str(out)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    print(pretrain(a.root, a.out, a.image_size, a.epochs))

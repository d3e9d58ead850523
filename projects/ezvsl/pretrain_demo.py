"""The demo's stand-in for ImageNet pre-training: a ResNet-18 classifier of the demo object
classes, trained on <root>/objects (ImageFolder layout) and saved as a torchvision-style state
dict that the demo config loads as ``model.image_weights`` and ``model.ogl_weights``.

EZ-VSL leans on its ImageNet-pretrained image encoder: trained from random initialisation on
small data it solves the contrastive task without learning to localize. So does the demo.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from shared.stand_in_classifier import train_stand_in_classifier


def pretrain(root: str | Path, out: str | Path, image_size: int = 112, epochs: int = 3, batch_size: int = 32,
             lr: float = 1e-3, seed: int = 0) -> dict:
    """The ResNet-18 classifier of <root>/objects (shared.stand_in_classifier), saved to ``out``."""
    return train_stand_in_classifier(Path(root) / "objects", out, image_size=image_size, epochs=epochs,
                                     batch_size=batch_size, lr=lr, seed=seed)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    print(pretrain(a.root, a.out, a.image_size, a.epochs))

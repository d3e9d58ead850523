"""CLIP's image transforms.

- ``clip_test_transform``: OpenAI CLIP's preprocess (= open_clip's ``preprocess_val`` for OpenAI
  weights): resize the short side (bicubic), centre crop, RGB, ToTensor, CLIP mean/std.
- ``coop_train_transform``: Dassl's ``random_resized_crop`` + ``random_flip`` + ``normalize`` as
  CoOp/UPL/PTNL train with: RandomResizedCrop(scale (0.08, 1.0), bicubic), horizontal flip.
  (open_clip's ``preprocess_train`` is RRC scale (0.9, 1.0) without flip: not the CoOp recipe.)
"""
from __future__ import annotations

from torchvision import transforms as T

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = T.InterpolationMode.BICUBIC


def _rgb(img):
    return img.convert("RGB") if img.mode != "RGB" else img


def clip_test_transform(size: int) -> T.Compose:
    return T.Compose([T.Resize(size, interpolation=BICUBIC), T.CenterCrop(size), T.Lambda(_rgb), T.ToTensor(),
                      T.Normalize(CLIP_MEAN, CLIP_STD)])


def coop_train_transform(size: int, scale: tuple[float, float] = (0.08, 1.0), flip: bool = True) -> T.Compose:
    ops = [T.Lambda(_rgb), T.RandomResizedCrop(size, scale=tuple(scale), interpolation=BICUBIC)]
    if flip:
        ops.append(T.RandomHorizontalFlip())
    return T.Compose(ops + [T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])

"""Augmentation pipelines of augmentation-invariance SSL: MoCo v3's two asymmetric views (BYOL
recipe) and DINO's multi-crop. Sizes are parameters so the same recipes serve small demo images;
``color=False`` leaves out the saturation/hue jitter and random grayscale for 1-channel images."""
from __future__ import annotations

from torchvision import transforms as T

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _blur(size: int, p: float):
    k = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd kernel of about 10 % of the side (23 at 224)
    return T.RandomApply([T.GaussianBlur(k, sigma=(0.1, 2.0))], p=p)


def _jitter(color: bool):
    j = T.ColorJitter(0.4, 0.4, 0.2, 0.1) if color else T.ColorJitter(0.4, 0.4)
    return [T.RandomApply([j], p=0.8)] + ([T.RandomGrayscale(p=0.2)] if color else [])


def moco_two_views(size: int = 224, crop_min: float = 0.08, mean=IMAGENET_MEAN, std=IMAGENET_STD, color: bool = True):
    """MoCo v3 (ViT): RandomResizedCrop(scale=(crop_min, 1)), jitter 0.8, grayscale 0.2, blur 1.0 / 0.1,
    solarize 0 / 0.2, flip; returns a function image -> [view1, view2]."""
    def view(blur_p: float, solarize_p: float):
        return T.Compose([T.RandomResizedCrop(size, scale=(crop_min, 1.0)), *_jitter(color), _blur(size, blur_p),
                          T.RandomSolarize(128, p=solarize_p), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean, std)])
    v1, v2 = view(1.0, 0.0), view(0.1, 0.2)
    return lambda img: [v1(img), v2(img)]


def dino_multicrop(global_size: int = 224, local_size: int = 96, n_local: int = 10, global_scale=(0.25, 1.0),
                   local_scale=(0.05, 0.25), mean=IMAGENET_MEAN, std=IMAGENET_STD, color: bool = True):
    """DINO: 2 global crops (blur 1.0; blur 0.1 + solarize 0.2) and n local crops (blur 0.5)."""
    def crop(size, scale, blur_p, solarize_p=0.0):
        return T.Compose([T.RandomResizedCrop(size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),
                          T.RandomHorizontalFlip(), *_jitter(color), _blur(size, blur_p),
                          T.RandomSolarize(128, p=solarize_p), T.ToTensor(), T.Normalize(mean, std)])
    g1, g2 = crop(global_size, global_scale, 1.0), crop(global_size, global_scale, 0.1, 0.2)
    loc = crop(local_size, local_scale, 0.5)
    return lambda img: [g1(img), g2(img)] + [loc(img) for _ in range(n_local)]


def eval_transform(size: int = 224, resize: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Resize(256) + CenterCrop(224) (resize = size * 8 / 7 unless given)."""
    return T.Compose([T.Resize(resize or int(round(size * 8 / 7)), interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])

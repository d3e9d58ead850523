"""A timm Vision Transformer that runs on compressed sequences.

Two compressions, alone or together, chosen per call:
- randomized token dropout: after the position embedding, keep a random subset of
  ``max(1, int(L * keep))`` patch tokens per sample (the same count across the batch); CLS is kept;
- flexible patch scaling: the patch-embedding kernel is resized from the one base kernel to the
  requested patch size on every call (FlexiViT's pseudo-inverse resize, a fixed linear map cached
  per size, so gradients reach the base kernel), and the position table is resized to the new grid
  covering the same image (FlexiViT): a token whose centre lies at a given image location gets the
  position of that location at every patch size. The fixed 2-D sin-cos table (MoCo v3) is evaluated
  at the new tokens' centres in base-grid units; a learned table (DINO) is resampled bilinearly
  (centre-aligned: at twice the patch each token gets the mean of the four base tokens it covers).
The transformer blocks, norms (LayerNorm eps 1e-6, as in MoCo v3's and DINO's ViTs) and CLS token
are timm's. Nothing is copied from the host per forward: the sin-cos tables are cached on the
device and the token-dropout noise is drawn on the device (or given precomputed), so a compiled
step has no graph breaks.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

ARCHS = {  # embed_dim, depth, heads
    "vit_base": (768, 12, 12),
    "vit_small": (384, 12, 6),
    "vit_tiny": (192, 12, 3),
    "vit_demo": (128, 4, 4),
    "vit_test": (32, 2, 2),
}


def grid_centres(grid: int, scale: float = 1.0, device=None) -> torch.Tensor:
    """Centres of ``grid`` tokens of ``scale`` base patches each, in base-grid units (base token i is at i)."""
    return (torch.arange(grid, dtype=torch.float32, device=device) + 0.5) * scale - 0.5


def sincos_pos_embed_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0, scale: float = 1.0,
                        device=None) -> torch.Tensor:
    """MoCo v3's fixed 2-D sin-cos embedding, (grid_h * grid_w, dim): [sin(r w), cos(r w), sin(c w), cos(c w)]
    of each token's row r and column c with w = temperature ** -(i / (dim / 4)). With ``scale`` s (the
    patch over the base patch) r and c are the token centres in base-grid units, (i + 0.5) s - 0.5, so
    the grid covers the same image as the base grid; s = 1 is MoCo v3's table."""
    if dim % 4:
        raise ValueError("sin-cos position embedding needs embed_dim divisible by 4")
    n = dim // 4
    omega = 1.0 / temperature ** (torch.arange(n, dtype=torch.float32, device=device) / n)
    rows, cols = torch.meshgrid(grid_centres(grid_h, scale, device), grid_centres(grid_w, scale, device), indexing="ij")
    r, c = rows.flatten()[:, None] * omega, cols.flatten()[:, None] * omega
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1)


def keep_count(num_tokens: int, keep: float) -> int:
    return max(1, int(num_tokens * keep))


def dropout_noise(batch: int, num_tokens: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """The uniform noise whose argsort picks the kept tokens, drawn on ``device`` (the generator must
    live there too)."""
    return torch.rand(batch, num_tokens, generator=generator, device=device)


def token_dropout(x: torch.Tensor, keep: float, noise: torch.Generator | torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, D) -> (B, keep_count(L, keep), D): a random subset per sample (order kept). ``noise`` is a
    (B, L) tensor (precomputed, e.g. outside a compiled step) or a generator on x's device."""
    if keep >= 1.0:
        return x
    b, n, d = x.shape
    k = keep_count(n, keep)
    if not isinstance(noise, torch.Tensor):
        noise = dropout_noise(b, n, x.device, noise)
    elif noise.shape != (b, n):
        raise ValueError(f"dropout noise of shape {tuple(noise.shape)} for {b} samples of {n} tokens")
    idx = noise.argsort(dim=1)[:, :k].sort(dim=1).values
    return x.gather(1, idx[..., None].expand(b, k, d))


class SeqCompressViT(nn.Module):
    def __init__(self, arch: str = "vit_base", img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 pos_embed: str = "sincos", freeze_patch_embed: bool = True, drop_path_rate: float = 0.0,
                 moco_init: bool = True):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; one of {sorted(ARCHS)}")
        dim, depth, heads = ARCHS[arch]
        self.vit = VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0,
                                     embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=4.0, qkv_bias=True,
                                     pos_embed="none", class_token=True, global_pool="token",
                                     drop_path_rate=drop_path_rate, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                     weight_init="moco" if moco_init else "")
        self.embed_dim, self.base_patch, self.img_size, self.in_chans = dim, patch_size, img_size, in_chans
        self.pos_embed_kind = pos_embed
        proj = self.vit.patch_embed.proj
        if moco_init:  # MoCo v3: xavier-uniform over the flattened kernel, zero bias
            val = math.sqrt(6.0 / float(in_chans * patch_size * patch_size + dim))
            nn.init.uniform_(proj.weight, -val, val)
            nn.init.zeros_(proj.bias)
        if freeze_patch_embed:  # MoCo v3's stop-grad-conv1: a frozen random patch projection
            proj.weight.requires_grad_(False)
            proj.bias.requires_grad_(False)
        grid = img_size // patch_size
        if pos_embed == "learn":
            self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
        elif pos_embed != "sincos":
            raise ValueError(f"pos_embed must be 'sincos' or 'learn', got {pos_embed!r}")
        self._resize, self._sincos = {}, {}

    def _resize_matrix(self, new: int, device) -> torch.Tensor:
        """(p0*p0, p*p) linear map taking a flattened base kernel to the pseudo-inverse-resized one."""
        key = (new, str(device))
        if key not in self._resize:
            p0 = self.base_patch
            basis = torch.eye(p0 * p0).reshape(p0 * p0, 1, p0, p0)
            self._resize[key] = resample_patch_embed(basis, [new, new]).reshape(p0 * p0, new * new).to(device)
        return self._resize[key]

    def patch_kernel(self, patch_size: int) -> torch.Tensor:
        w = self.vit.patch_embed.proj.weight
        if patch_size == self.base_patch:
            return w
        m = self._resize_matrix(patch_size, w.device).to(w.dtype)
        return (w.flatten(2) @ m).reshape(*w.shape[:2], patch_size, patch_size)

    def pos_embed_for(self, gh: int, gw: int, device, dtype, patch_size: int | None = None) -> torch.Tensor:
        """(1, gh * gw, D): the position table of a gh x gw grid of ``patch_size`` patches (default: the
        base patch), each token at its centre's image location."""
        scale = (patch_size or self.base_patch) / self.base_patch
        if self.pos_embed_kind == "sincos":
            if torch.compiler.is_compiling():  # traced into the graph: computed on the device, no cache
                return sincos_pos_embed_2d(gh, gw, self.embed_dim, scale=scale, device=device).to(dtype)[None]
            key = (gh, gw, scale, str(device), dtype)
            if key not in self._sincos:
                self._sincos[key] = sincos_pos_embed_2d(gh, gw, self.embed_dim, scale=scale, device=device).to(dtype)[None]
            return self._sincos[key]
        g = self.img_size // self.base_patch
        if (gh, gw) == (g, g) and scale == 1.0:
            return self.pos_embed
        # the new grid covers gh * scale base tokens: resample to it from the base grid of this input size
        src_h, src_w = round(gh * scale), round(gw * scale)
        table = self.pos_embed
        if (src_h, src_w) != (g, g):  # an input of another size (DINO's local crops): the whole table to
            # the crop's base grid, bicubic as DINO's interpolate_pos_encoding
            table = resample_abs_pos_embed(table, [src_h, src_w], old_size=[g, g], num_prefix_tokens=0)
        if (src_h, src_w) == (gh, gw):
            return table
        return resample_abs_pos_embed(table, [gh, gw], old_size=[src_h, src_w], num_prefix_tokens=0,
                                      interpolation="bilinear", antialias=False)

    def num_tokens(self, img_size: int, patch_size: int | None = None, keep: float = 1.0) -> int:
        """Sequence length (CLS included) the blocks see for a square input."""
        g = img_size // (patch_size or self.base_patch)
        return 1 + keep_count(g * g, keep)

    def num_patches(self, img_size: int, patch_size: int | None = None) -> int:
        g = img_size // (patch_size or self.base_patch)
        return g * g

    def forward(self, x: torch.Tensor, patch_size: int | None = None, keep: float = 1.0,
                generator: torch.Generator | torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> the CLS feature (B, D) after the final norm."""
        p = patch_size or self.base_patch
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ValueError(f"input {tuple(x.shape[-2:])} is not divisible by patch size {p}")
        proj = self.vit.patch_embed.proj
        t = F.conv2d(x, self.patch_kernel(p), proj.bias, stride=p)
        gh, gw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        t = t + self.pos_embed_for(gh, gw, t.device, t.dtype, p)
        t = token_dropout(t, keep, generator)
        t = torch.cat([self.vit.cls_token.expand(t.shape[0], -1, -1).to(t.dtype), t], dim=1)
        t = self.vit.norm_pre(t)
        t = self.vit.blocks(t)
        t = self.vit.norm(t)
        return t[:, 0]


def vit_forward_flops(num_tokens: int, dim: int, depth: int, patch: int, in_chans: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs (2 per multiply-add) of the ViT trunk on one image: patch projection,
    qkv/proj/MLP matmuls and the two attention matmuls of every block."""
    n = num_tokens
    per_block = 2 * (n * dim * 3 * dim + n * dim * dim + 2 * n * dim * int(mlp_ratio * dim) + 2 * n * n * dim)
    return depth * per_block + 2 * (n - 1) * dim * in_chans * patch * patch

"""Images to patch sequences, with the paper's gaps, and the fixed 2-D sin-cos positions.

Layout conventions (the official ones; they matter when weights move to timm):
- a patch is flattened in (row-in-patch, col-in-patch, channel) order, channel last;
- patch ``i`` of a ``gh x gw`` grid sits at row ``i // gw``, column ``i % gw``;
- position row 0 belongs to the CLS token and is all zeros; row ``1 + i`` to patch ``i``.
"""
from __future__ import annotations

import torch


def cell_size(patch_size: int, gap: int) -> int:
    return patch_size + gap


def patchify(imgs: torch.Tensor, patch_size: int, gap: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, gh * gw, p * p * C). The image is cut into cells of ``patch_size + gap``
    pixels; from each cell one ``patch_size`` square is taken, its top-left corner at a random
    offset in [0, gap) drawn independently per cell, per image and per axis (gap 0: the plain grid)."""
    if imgs.ndim != 4:
        raise ValueError(f"patchify expects (B, C, H, W) images, got shape {tuple(imgs.shape)}")
    b, c, h, w = imgs.shape
    p, cell = patch_size, cell_size(patch_size, gap)
    if h % cell or w % cell:
        raise ValueError(f"image side {h}x{w} is not a multiple of the cell size {cell} "
                         f"(patch {p} + gap {gap}); the crop must be grid_size * (patch + gap) pixels")
    gh, gw = h // cell, w // cell
    x = imgs.reshape(b, c, gh, cell, gw, cell).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, cell, cell, C)
    if gap > 0:
        off_r = torch.randint(0, gap, (b, gh, gw), generator=generator).to(imgs.device)
        off_c = torch.randint(0, gap, (b, gh, gw), generator=generator).to(imgs.device)
        ar = torch.arange(p, device=imgs.device)
        rows = (off_r[..., None] + ar)[..., None, None].expand(b, gh, gw, p, cell, c)
        x = x.gather(3, rows)
        cols = (off_c[..., None] + ar)[..., None, :, None].expand(b, gh, gw, p, p, c)
        x = x.gather(4, cols)
    return x.reshape(b, gh * gw, p * p * c)


def unpatchify(x: torch.Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """(B, gh * gw, p * p * C) -> (B, C, gh * p, gw * p): the inverse of ``patchify`` with gap 0."""
    b = x.shape[0]
    gh, gw = grid
    p = patch_size
    if x.shape[1] != gh * gw or x.shape[2] != p * p * channels:
        raise ValueError(f"unpatchify: got {tuple(x.shape)} for grid {grid}, patch {p}, {channels} channels")
    return x.reshape(b, gh, gw, p, p, channels).permute(0, 5, 1, 3, 2, 4).reshape(b, channels, gh * p, gw * p)


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., ) positions -> (..., dim): [sin(pos * w_k), cos(pos * w_k)], w_k = 10000^(-k / dim)."""
    k = torch.arange(dim // 2, dtype=torch.float64)
    omega = 1.0 / 10000 ** (k / (dim // 2))
    out = pos.double()[..., None] * omega
    return torch.cat([out.sin(), out.cos()], -1)


def official_grid_pos_embed(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """(1 + gh * gw, dim) fixed positions as the official code builds them: coordinates
    linspace(0, 1, g) rescaled to [0, gh] (a step of gh / (g - 1), 14/13 on the 14 x 14 grid);
    each patch gets [embedding of its column, embedding of its row], each dim/2 wide; row 0 (CLS) is 0."""
    gh, gw = grid
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    scale = float(gh)
    rows = torch.linspace(0, 1, gh, dtype=torch.float32) * scale
    cols = torch.linspace(0, 1, gw, dtype=torch.float32) * scale
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    pe = torch.cat([sincos_1d(c.flatten(), dim // 2), sincos_1d(r.flatten(), dim // 2)], -1).float()
    return torch.cat([torch.zeros(1, dim), pe], 0)

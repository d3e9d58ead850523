"""The ViT encoder of Latent MIM (online and target share this class) and its latent projector.

Pre-norm timm blocks (qkv bias, GELU MLP x4, LayerNorm eps 1e-6, no layer-scale, SDPA attention),
a Linear patch embedding over (row, col, channel)-ordered patches, a learnable CLS token and the
fixed official sin-cos grid with a zero CLS row. The encoder takes patch *sequences* with their
grid ids, so the online encoder sees only the visible patches and the target encoder only the
masked ones; full images are patchified without gaps (evaluation).
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from timm.models.vision_transformer import Block

from projects.latent_mim.patches import official_grid_pos_embed, patchify

SIZES = {  # the official size table
    "vit_tiny": dict(dim=192, depth=12, heads=3, patch_size=16),
    "vit_small": dict(dim=384, depth=12, heads=6, patch_size=16),
    "vit_base": dict(dim=768, depth=12, heads=12, patch_size=16),
    "vit_large": dict(dim=1024, depth=24, heads=16, patch_size=16),
    "vit_huge": dict(dim=1280, depth=32, heads=16, patch_size=14),
}


def xavier_init(module: nn.Module) -> None:
    """Linear: Xavier-uniform weight, zero bias; LayerNorm: 1 / 0 (the official JAX-ViT style init)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build_projector(dim: int, hidden: int, depth: int) -> nn.Module | None:
    """Linear(no bias) -> LN -> GELU, ..., Linear(no bias) -> LN (LN on the output too; LN eps 1e-5).
    ``depth`` 0: no projector."""
    if depth == 0:
        return None
    layers = []
    for i in range(depth):
        d_in, d_out = dim if i == 0 else hidden, dim if i == depth - 1 else hidden
        layers += [nn.Linear(d_in, d_out, bias=False), nn.LayerNorm(d_out)]
        if i < depth - 1:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class PositionTable(nn.Module):
    """The (1 + N, D) position table: a buffer (``freeze``, the default) or a parameter initialised
    to the same values. ``lookup(pid, cls)`` -> positions of grid ids, with the CLS row prepended."""

    def __init__(self, grid: int, dim: int, freeze: bool = True):
        super().__init__()
        table = official_grid_pos_embed((grid, grid), dim)
        if freeze:
            self.register_buffer("pos_embeds", table)
        else:
            self.pos_embeds = nn.Parameter(table)

    def lookup(self, pid: torch.Tensor, cls: bool = True) -> torch.Tensor:
        idx = pid + 1
        if cls:
            idx = torch.cat([torch.zeros_like(idx[:, :1]), idx], 1)
        return self.pos_embeds[idx]


class PatchEmbed(nn.Module):
    """Linear over a flattened (p, p, C) patch."""

    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(patch_size * patch_size * in_chans, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Encoder(nn.Module):
    def __init__(self, grid: int = 14, patch_size: int = 16, in_chans: int = 3, dim: int = 768, depth: int = 12,
                 heads: int = 12, mlp_ratio: float = 4.0, proj_hidden: int = 4096, proj_depth: int = 3,
                 freeze_pe: bool = True, drop_path: float = 0.0):
        super().__init__()
        self.grid, self.patch_size, self.in_chans, self.dim = grid, patch_size, in_chans, dim
        self.embed = PatchEmbed(patch_size, in_chans, dim)
        self.pos_embed = PositionTable(grid, dim, freeze_pe)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=norm,
                                           drop_path=drop_path) for _ in range(depth)])  # constant rate, as official
        self.norm = norm(dim)
        self.head = build_projector(dim, proj_hidden, proj_depth)
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(xavier_init)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def tokens(self, patches: torch.Tensor, pid: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-final-LN tokens (B, 1 + L, D) of patches (B, L, p*p*C) at grid ids ``pid`` (B, L), or of
        full images (B, C, H, W), patchified without gaps."""
        if patches.ndim == 4:
            patches = patchify(patches, self.patch_size, 0)
            if patches.shape[1] != self.num_patches:
                raise ValueError(f"a full image must give {self.grid}x{self.grid} patches of {self.patch_size} px, "
                                 f"got {patches.shape[1]}")
            pid = torch.arange(patches.shape[1], device=patches.device).expand(patches.shape[0], -1)
        if pid is None:
            raise ValueError("patch sequences need their grid ids (pid)")
        x = self.embed(patches)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        x = x + self.pos_embed.lookup(pid).to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return x

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final LN, then the latent projector (when built)."""
        x = self.norm(tokens)
        return self.head(x) if self.head is not None else x

    def forward(self, patches: torch.Tensor, pid: torch.Tensor | None = None) -> torch.Tensor:
        return self.project(self.tokens(patches, pid))


def build_encoder(m, proj_depth: int | None = None) -> Encoder:
    """The encoder a ``model`` config section describes (``arch`` from the size table, or ``custom``);
    ``proj_depth`` overrides the projector depth (0: none, the MAE baseline)."""
    if m.arch == "custom":
        size = dict(dim=m.dim, depth=m.depth, heads=m.heads, patch_size=m.patch_size)
    elif m.arch in SIZES:
        size = SIZES[m.arch]
    else:
        raise ValueError(f"model.arch must be one of {sorted(SIZES) + ['custom']}, got {m.arch!r}")
    return Encoder(grid=m.grid_size, patch_size=size["patch_size"], in_chans=m.in_chans, dim=size["dim"],
                   depth=size["depth"], heads=size["heads"], mlp_ratio=m.mlp_ratio, proj_hidden=m.proj_mlp_dim,
                   proj_depth=m.proj_mlp_depth if proj_depth is None else proj_depth, freeze_pe=m.freeze_pe, drop_path=m.drop_path)

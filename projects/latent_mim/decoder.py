"""The cross-attention decoder of Latent MIM, and the MAE decoder of the pixel baseline.

Latent MIM's decoder never lets visible tokens attend to each other: its queries (a decoder CLS
and one query per masked position) self-attend, then cross-attend to the projected visible tokens.
Each masked query starts as the zero-initialised mask token plus a *visual cue*: the average of the
visible tokens weighted by softmax(<PE(query), PE(visible)> / sqrt(D)), a weighting that depends
on positions only.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath, Mlp
from timm.models.vision_transformer import Attention, Block

from projects.latent_mim.encoder import PositionTable, xavier_init


def visual_cue(pe_q: torch.Tensor, pe_k: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_j softmax_j(<pe_q_i, pe_k_j> / sqrt(D)) values_j: (B, Lq, D), (B, Lk, D), (B, Lk, D) -> (B, Lq, D)."""
    w = (pe_q @ pe_k.transpose(-2, -1)) * pe_q.shape[-1] ** -0.5
    return w.softmax(-1).to(values.dtype) @ values


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, lq, d = q.shape
        h = self.heads
        q = self.q_proj(q).reshape(b, lq, h, d // h).transpose(1, 2)
        k, v = self.kv_proj(kv).reshape(b, kv.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, lq, d))


class CrossBlock(nn.Module):
    """Pre-norm: queries self-attend, cross-attend to the visible tokens (own LNs for q and kv), MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, norm_layer=nn.LayerNorm, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.self_attn = Attention(dim, heads, qkv_bias=True)
        self.norm2q, self.norm2kv = norm_layer(dim), norm_layer(dim)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm3 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        q = q + self.drop_path(self.self_attn(self.norm1(q)))
        q = q + self.drop_path(self.cross_attn(self.norm2q(q), self.norm2kv(kv)))
        return q + self.drop_path(self.mlp(self.norm3(q)))


class CrossDecoder(nn.Module):
    def __init__(self, grid: int, in_dim: int, dim: int = 512, depth: int = 3, heads: int = 16, mlp_ratio: float = 4.0,
                 out_dim: int | None = None, visual_cues: bool = True, freeze_pe: bool = True, drop_path: float = 0.0):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.visual_cues = visual_cues
        self.embed = nn.Linear(in_dim, dim)
        self.pos_embed = PositionTable(grid, dim, freeze_pe)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([CrossBlock(dim, heads, mlp_ratio, norm, drop_path) for _ in range(depth)])
        self.norm = norm(dim)
        self.head = nn.Linear(dim, out_dim or in_dim)
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(xavier_init)

    def forward(self, x: torch.Tensor, pid: torch.Tensor, mask_pid: torch.Tensor) -> torch.Tensor:
        """x: encoder outputs (B, 1 + Lv, D_enc) (CLS first) at grid ids ``pid`` (B, Lv); predictions
        (B, Lm, out_dim) for the grid ids ``mask_pid`` (B, Lm), in that order (the CLS output is dropped)."""
        if x.shape[1] != pid.shape[1] + 1:
            raise ValueError(f"decoder input has {x.shape[1]} tokens for {pid.shape[1]} visible ids (+1 CLS expected)")
        x = self.embed(x)
        b = x.shape[0]
        m = self.mask_token.expand(b, mask_pid.shape[1], -1)
        if self.visual_cues:
            pe_q = self.pos_embed.lookup(mask_pid, cls=False)
            pe_k = self.pos_embed.lookup(pid, cls=False)
            m = m + visual_cue(pe_q.float(), pe_k.float(), x[:, 1:])
        m = torch.cat([self.cls_token.expand(b, -1, -1).to(m.dtype), m], 1)
        x = x + self.pos_embed.lookup(pid).to(x.dtype)
        m = m + self.pos_embed.lookup(mask_pid).to(m.dtype)
        for blk in self.blocks:
            m = blk(m, x)
        return self.head(self.norm(m))[:, 1:]


class MAEDecoder(nn.Module):
    """MAE's decoder for the pixel baseline: visible tokens and mask tokens in grid order, self-attention
    over all of them, Linear to the pixels of a patch; returns predictions at ``mask_pid``."""

    def __init__(self, grid: int, in_dim: int, out_dim: int, dim: int = 512, depth: int = 8, heads: int = 16,
                 mlp_ratio: float = 4.0, freeze_pe: bool = True):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.embed = nn.Linear(in_dim, dim)
        self.pos_embed = PositionTable(grid, dim, freeze_pe)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)])
        self.norm = norm(dim)
        self.head = nn.Linear(dim, out_dim)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(xavier_init)

    def forward(self, x: torch.Tensor, pid: torch.Tensor, mask_pid: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b = x.shape[0]
        m = self.mask_token.expand(b, mask_pid.shape[1], -1).to(x.dtype)
        tokens = torch.cat([x, m], 1)
        ids = torch.cat([pid, mask_pid], 1)
        tokens = tokens + self.pos_embed.lookup(ids).to(x.dtype)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.head(self.norm(tokens))[:, 1 + pid.shape[1]:]

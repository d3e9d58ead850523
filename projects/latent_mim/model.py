"""Latent MIM (online encoder, EMA target encoder, cross-attention decoder) and the pixel-MAE
baseline on the same backbone; ``build_model(cfg)`` picks one from ``model.method``.

One training step of Latent MIM, as the official ``LMIM.forward`` does it:
1. patchify the 280-px crop with gaps: 196 patches, one per 20-px cell;
2. a uniform random permutation per image: the first ``num_vis`` (20) patches are visible, the
   other 176 masked (targets: the masked ones, or all 196 with ``mask_target: false``);
3. targets = target encoder (LN + projector included) on the target patches only, no gradient;
   its outputs at the masked positions (the last 176);
4. online encoder on the visible patches -> decoder -> one prediction per masked position;
5. patch InfoNCE (or norm_l2), plus the optional average-similarity regulariser.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from shared.config import ConfigError
from projects.latent_mim.decoder import CrossDecoder, MAEDecoder
from projects.latent_mim.encoder import build_encoder
from projects.latent_mim.losses import (avg_pairwise_sim, avg_sim_regularizer, norm_l2_loss, patch_infonce_loss,
                                        pixel_mae_loss)
from projects.latent_mim.patches import patchify

LOSSES = ("infonce_patches", "norm_l2")
TARGETS = ("ema", "joint")


def random_views(batch: int, length: int, num_vis: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(perm, vis_idx, mask_idx): a uniform random order of the ``length`` grid ids per image
    (argsort of uniform noise); the first ``num_vis`` are visible, the rest masked."""
    if not 0 < num_vis < length:
        raise ValueError(f"num_vis must be in (0, {length}), got {num_vis}")
    noise = torch.rand(batch, length, generator=generator)
    perm = noise.argsort(1).to(device)
    return perm, perm[:, :num_vis], perm[:, num_vis:]


def gather_patches(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))


class LatentMIM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m, l = cfg.model, cfg.loss
        if l.name not in LOSSES:
            raise ValueError(f"loss.name must be one of {LOSSES}, got {l.name!r}")
        if m.target not in TARGETS:
            raise ValueError(f"model.target must be one of {TARGETS}, got {m.target!r}")
        self.patch_gap, self.num_vis, self.mask_target = int(m.patch_gap), int(m.num_vis), bool(m.mask_target)
        self.loss_name, self.tau, self.standardize = l.name, float(l.tau), bool(l.standardize_pred)
        self.avg_sim_coeff = float(l.avg_sim_coeff)
        self.target_mode = m.target
        self.encoder = build_encoder(m)
        self.target_encoder = None
        if m.target == "ema":
            self.target_encoder = copy.deepcopy(self.encoder)
            for p in self.target_encoder.parameters():
                p.requires_grad_(False)
        d = self.encoder.dim
        self.decoder = CrossDecoder(m.grid_size, d, m.decoder_dim, m.decoder_depth, m.decoder_heads, m.mlp_ratio,
                                    out_dim=d, visual_cues=m.visual_cues, freeze_pe=m.freeze_pe, drop_path=m.drop_path)

    @property
    def train_crop(self) -> int:
        return self.encoder.grid * (self.encoder.patch_size + self.patch_gap)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- m * target + (1 - m) * online, parameter by parameter (the official order of terms)."""
        if self.target_encoder is None:
            return
        for p, t in zip(self.encoder.parameters(), self.target_encoder.parameters()):
            t.copy_(t * momentum + p.detach() * (1.0 - momentum))

    def forward(self, imgs: torch.Tensor, generator: torch.Generator | None = None, sim_target: float = 0.75) -> tuple:
        """(loss, metrics) for a batch of training crops (B, C, S, S), S = grid * (patch + gap).
        ``generator`` draws the gap offsets and the masks (CPU generator; seeded per step by the caller)."""
        if imgs.shape[-1] != self.train_crop or imgs.shape[-2] != self.train_crop:
            raise ValueError(f"training crops must be {self.train_crop} px (grid {self.encoder.grid} x (patch "
                             f"{self.encoder.patch_size} + gap {self.patch_gap})), got {tuple(imgs.shape[-2:])}")
        pix = patchify(imgs, self.encoder.patch_size, self.patch_gap, generator)
        b, n, _ = pix.shape
        perm, vis_idx, mask_idx = random_views(b, n, self.num_vis, generator, imgs.device)
        trg_idx = mask_idx if self.mask_target else perm
        n_mask = mask_idx.shape[1]

        if self.target_encoder is not None:
            with torch.no_grad():
                x_trg = self.target_encoder(gather_patches(pix, trg_idx), trg_idx)[:, -n_mask:]
        else:  # joint: the online encoder makes its own targets, gradients flow through both branches
            x_trg = self.encoder(gather_patches(pix, trg_idx), trg_idx)[:, -n_mask:]
        x_vis = self.encoder(gather_patches(pix, vis_idx), vis_idx)
        x_pred = self.decoder(x_vis, vis_idx, mask_idx)
        return self.loss_terms(x_pred.float(), x_trg.float(), x_vis[:, 1:].float(), sim_target)

    def loss_terms(self, pred: torch.Tensor, target: torch.Tensor, vis: torch.Tensor, sim_target: float) -> tuple:
        if self.loss_name == "infonce_patches":
            main = patch_infonce_loss(pred, target, self.tau, self.standardize)
        else:
            main = norm_l2_loss(pred, target)
        loss = main
        if self.avg_sim_coeff > 0:
            loss = loss + self.avg_sim_coeff * avg_sim_regularizer(pred, vis, sim_target)
        with torch.no_grad():
            metrics = {"train/loss_main": main.detach(), "train/avg_sim_pred": avg_pairwise_sim(pred),
                       "train/avg_sim_vis": avg_pairwise_sim(vis), "train/avg_sim_trg": avg_pairwise_sim(target)}
        return loss, metrics


class PixelMAE(nn.Module):
    """MAE on the same encoder (no projector): ``mae_mask_ratio`` of the patches masked, a
    self-attention decoder predicts their (normalised) pixels in the (row, col, channel) layout."""

    def __init__(self, cfg):
        super().__init__()
        m = cfg.model
        self.patch_gap = int(m.patch_gap)
        self.encoder = build_encoder(m, proj_depth=0)
        self.target_encoder = None
        n = self.encoder.num_patches
        self.num_vis = int(round(n * (1 - float(m.mae_mask_ratio))))
        self.norm_pix = bool(m.norm_pix_loss)
        p = self.encoder.patch_size
        self.decoder = MAEDecoder(m.grid_size, self.encoder.dim, p * p * self.encoder.in_chans, m.mae_decoder_dim,
                                  m.mae_decoder_depth, m.mae_decoder_heads, m.mlp_ratio, m.freeze_pe)

    @property
    def train_crop(self) -> int:
        return self.encoder.grid * (self.encoder.patch_size + self.patch_gap)

    def update_target(self, momentum: float) -> None:
        return None

    def forward(self, imgs: torch.Tensor, generator: torch.Generator | None = None, sim_target: float = 0.75) -> tuple:
        if imgs.shape[-1] != self.train_crop or imgs.shape[-2] != self.train_crop:
            raise ValueError(f"training crops must be {self.train_crop} px, got {tuple(imgs.shape[-2:])}")
        pix = patchify(imgs, self.encoder.patch_size, self.patch_gap, generator)
        b, n, _ = pix.shape
        _, vis_idx, mask_idx = random_views(b, n, self.num_vis, generator, imgs.device)
        x_vis = self.encoder(gather_patches(pix, vis_idx), vis_idx)
        pred = self.decoder(x_vis, vis_idx, mask_idx)
        loss = pixel_mae_loss(pred.float(), gather_patches(pix, mask_idx).float(), self.norm_pix)
        with torch.no_grad():
            metrics = {"train/loss_main": loss.detach(), "train/avg_sim_vis": avg_pairwise_sim(x_vis[:, 1:].float())}
        return loss, metrics


METHODS = {"latent_mim": LatentMIM, "mae": PixelMAE}


def check_sizes(cfg) -> None:
    """The sizes derived from the config fit the patch grid, checked before any run folder or data is made:
    a ConfigError naming the key the user set (model.num_vis, model.mae_mask_ratio) and what fits."""
    m = cfg.model
    if m.method not in METHODS:
        raise ConfigError(f"model.method must be one of {sorted(METHODS)}, got {m.method!r}")
    n = int(m.grid_size) ** 2
    if m.method == "mae":
        vis = int(round(n * (1 - float(m.mae_mask_ratio))))
        if not 0 < vis < n:
            raise ConfigError(f"model.mae_mask_ratio={m.mae_mask_ratio} leaves {vis} of the {n} patches "
                              f"(model.grid_size={m.grid_size} squared) visible; it must leave between 1 and {n - 1}")
    elif not 0 < int(m.num_vis) < n:
        raise ConfigError(f"model.num_vis={m.num_vis} visible patches do not fit the {n} patches of the grid "
                          f"(model.grid_size={m.grid_size} squared): give 1 to {n - 1}")


def build_model(cfg) -> nn.Module:
    """The model a config describes, randomly initialised (seeded by the caller)."""
    check_sizes(cfg)
    return METHODS[cfg.model.method](cfg)

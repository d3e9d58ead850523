"""One OneAVM training step: ``JointObjective`` (the three losses of a batch, described in train.py's
docstring), ``make_optimizer`` and ``train_step``; train.py runs them on the loop, bench.py times them."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.amp import autocast
from shared.data.sampling import sample_seed
from projects.oneavm.frontend import encoder_spectrogram, front_end
from projects.oneavm.losses import (mil_contrastive_loss, mixing_targets, multi_positive_contrastive_loss,
                                    separation_loss)
from projects.oneavm.model import OneAVM

SILENT = 1e-4  # max |x| below which a training clip counts as silent


def sep_loss_kind(cfg) -> str:
    kind = cfg.sep.loss
    if kind == "auto":
        return "bce" if cfg.sep.mask == "binary" else "l1"
    return kind


def rolled(b: int, k: int, device) -> torch.Tensor:
    """Index of the k-th partner of every sample: (i + k) mod b."""
    return (torch.arange(b, device=device) + k) % b


def separation_validity(wave: torch.Tensor, audio_keys: list[str], n_mix: int) -> torch.Tensor:
    """(B,) bool: mixture i (sample i with its n_mix-1 partners) has no silent source and no clip twice."""
    b = wave.shape[0]
    silent = wave.detach().abs().amax(-1).cpu() < SILENT
    ok = torch.ones(b, dtype=torch.bool)
    for i in range(b):
        members = [(i + k) % b for k in range(n_mix)]
        keys = [audio_keys[j] for j in members]
        ok[i] = len(set(keys)) == n_mix and not bool(silent[members].any())
    return ok


class JointObjective(nn.Module):
    """The three losses of one batch; a module so DDP synchronises the gradients of all of them."""

    def __init__(self, model: OneAVM, cfg):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.fe = front_end(cfg)

    def forward(self, image: torch.Tensor, wave: torch.Tensor, sep_valid: torch.Tensor, lam: float,
                step: int = 0) -> dict:
        c, model = self.cfg, self.model
        dev = image.device
        b = image.shape[0]
        out = {}
        use_audio = c.loss.w_loc > 0 or c.loss.w_mix > 0
        spec = encoder_spectrogram(self.fe, wave, c.data.audio.encoder_scale) if use_audio else None
        with autocast(dev, c.train.amp):
            trunk = model.image_trunk(image)
            img = model.image_map(trunk) if c.loss.w_loc > 0 else None
            aud = model.encode_audio(spec) if use_audio else None
        total = image.new_zeros(())
        if c.loss.w_loc > 0:
            out["loss/loc"] = mil_contrastive_loss(img, aud, c.loss.tau)
            total = total + c.loss.w_loc * out["loss/loc"]
        if c.loss.w_mix > 0 and step >= c.mix.start_step:
            partner = rolled(b, 1, dev)
            mixed = mix_images(image, partner, lam, c.mix.form, step)
            with autocast(dev, c.train.amp):
                mix_map = model.encode_image(mixed)
            targets = mixing_targets(partner, lam, "uniform" if c.mix.form == "mosaic" else c.mix.target)
            out["loss/mix"] = multi_positive_contrastive_loss(mix_map, aud.detach() if c.mix.detach_audio else aud,
                                                              targets, c.loss.tau)
            total = total + c.loss.w_mix * out["loss/mix"]
        if c.loss.w_sep > 0:
            n = c.sep.n_mix
            idx = [rolled(b, k, dev) for k in range(n)]
            t = self.fe.targets(torch.stack([wave[i] for i in idx]), c.sep.mask, c.sep.weighted)
            with autocast(dev, c.train.amp):
                sound = model.sound_features(t["log_mag_mix"])
                vis = model.separation_visual(trunk)
                logits = torch.stack([model.mask_logits(vis[i], sound) for i in idx])
            out["loss/sep"] = separation_loss(logits, t["gt_masks"], t["weight"], sep_loss_kind(cfg=c),
                                              valid=sep_valid.to(dev))
            total = total + c.loss.w_sep * out["loss/sep"]
        out["loss"] = total
        return out


def mix_images(image: torch.Tensor, partner: torch.Tensor, lam: float, form: str, step: int) -> torch.Tensor:
    """Frame i mixed in pixel space with frame partner[i]. ``blend``: lam * I_i + (1 - lam) * I_partner.
    ``mosaic``: both frames at half size in opposite quadrants of one frame, the other two quadrants zero (the
    mean colour after normalisation); which diagonal, and which end holds I_i, cycle with (i + step) % 4."""
    if form == "blend":
        return lam * image + (1 - lam) * image[partner]
    b, _, h, w = image.shape
    h2, w2 = h // 2, w // 2
    small = F.interpolate(image, size=(h2, w2), mode="bilinear", antialias=True, align_corners=False)
    out = image.new_zeros(image.shape)
    diagonals = (((0, 0), (h - h2, w - w2)), ((0, w - w2), (h - h2, 0)))
    arrangement = (torch.arange(b, device=image.device) + step) % 4
    for k in range(4):  # one slice assignment per arrangement, not per sample
        i = (arrangement == k).nonzero().squeeze(1)
        (ys, xs), (yp, xp) = diagonals[k % 2] if k < 2 else diagonals[k % 2][::-1]
        out[i, :, ys:ys + h2, xs:xs + w2] = small[i]
        out[i, :, yp:yp + h2, xp:xp + w2] = small[partner[i]]
    return out


def draw_lambda(cfg, step: int) -> float:
    """The blend weight of this step: fixed, or Beta(a, a) drawn from (seed, step) so a resumed run draws the same."""
    if cfg.mix.lam_beta and cfg.mix.lam_beta > 0:
        rng = np.random.default_rng(sample_seed(cfg.run.seed, step, 7))
        return float(rng.beta(cfg.mix.lam_beta, cfg.mix.lam_beta))
    return float(cfg.mix.lam)


def make_optimizer(model: OneAVM, cfg) -> torch.optim.Optimizer:
    sep_params = list(model.unet.parameters()) + list(model.synth.parameters())
    ids = {id(p) for p in sep_params}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.Adam([{"params": rest, "lr": cfg.optim.lr},
                             {"params": sep_params, "lr": cfg.optim.lr * cfg.optim.sep_lr_mult}],
                            weight_decay=cfg.optim.weight_decay)


def train_step(objective, batch, opt, cfg, device, step: int) -> tuple[torch.Tensor, dict]:
    image = batch["image"].to(device, non_blocking=True)
    wave = batch["wave"].to(device, non_blocking=True)
    if cfg.train.channels_last and device.type == "cuda":
        image = image.contiguous(memory_format=torch.channels_last)
    valid = separation_validity(batch["wave"], list(batch["audio_key"]), cfg.sep.n_mix)
    out = objective(image, wave, valid, draw_lambda(cfg, step), step)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
    metrics = {k: v.detach() for k, v in out.items() if k.startswith("loss/")}
    metrics["train/sep_mixtures_skipped"] = int((~valid).sum())
    return out["loss"].detach(), metrics

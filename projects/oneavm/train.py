"""OneAVM joint training on shared/loop.py: one shared encoder, three objectives, one optimizer.

    python -m projects.oneavm.train --config projects/oneavm/configs/<exp>.yaml [key=value ...]
    torchrun --nproc_per_node 8 -m projects.oneavm.train --config ...
    python -m projects.oneavm.train --config ... --cluster slurm --partition P --gpus-per-node 8

Every step, for a batch of (frame, clip) pairs:
1. localized AV correspondence: MIL contrastive loss of each frame's map with the batch's audio;
2. mix-and-separate: sample i's waveform mixed with the next n_mix-1 samples' (a roll of the batch),
   each source's mask predicted from its own frame's visual feature; pairs of one clip with itself
   and silent sources are left out of the loss and counted;
3. pixel-space image mixing: frame i blended with frame i+1 (lam; or, ``mix.form: mosaic``, both at half
   size in opposite quadrants), contrasted with the batch's audio with both sounds as positives; the audio
   embeddings enter detached (``mix.detach_audio``), so this objective shapes the visual side only.
The total is w_loc * L1 + w_sep * L2 + w_mix * L3; a zero weight removes the objective (ablations).
After training the configured evaluations run (projects/oneavm/eval.py) with no fine-tuning.
"""
from __future__ import annotations

import logging
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.amp import autocast
from shared.data.robust import collate_skipping_bad
from shared.data.sampling import ResumableSampler, sample_seed
from shared.data.separation import SeparationFrontEnd
from shared.loop import Loop
from shared.run import RunContext, start_run
from projects.oneavm.data import train_set
from projects.oneavm.losses import (mil_contrastive_loss, mixing_targets, multi_positive_contrastive_loss,
                                    separation_loss)
from projects.oneavm.model import OneAVM

log = logging.getLogger(__name__)
SILENT = 1e-4  # max |x| below which a training clip counts as silent


def build_model(cfg, device: torch.device | str | None = None) -> OneAVM:
    """The OneAVM network of ``cfg.model`` (random initialisation when model.image_weights is null)."""
    m = cfg.model
    model = OneAVM(m.dim, m.image_weights, m.unet_levels, m.unet_ngf, m.sep_channels)
    device = torch.device(device or "cpu")
    model = model.to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def front_end(cfg) -> SeparationFrontEnd:
    a = cfg.data.audio
    return SeparationFrontEnd(a.n_fft, a.hop, a.log_freq, a.n_freq_out)


def encoder_spectrogram(fe: SeparationFrontEnd, wave: torch.Tensor, scale: float) -> torch.Tensor:
    """The audio encoder's input: log power on the separation grid, log(|X|^2 + 1e-7) / scale, (B, 1, F', T)."""
    mag = fe.warp(fe.stft(wave).abs())
    return (torch.log(mag ** 2 + 1e-7) / scale).unsqueeze(1)


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


def check_config(cfg) -> None:
    if min(cfg.loss.w_loc, cfg.loss.w_sep, cfg.loss.w_mix) < 0 or \
            cfg.loss.w_loc + cfg.loss.w_sep + cfg.loss.w_mix == 0:
        raise ValueError("loss weights must be >= 0 with at least one positive")
    if cfg.sep.mask not in ("binary", "ratio"):
        raise ValueError(f"sep.mask must be binary or ratio, got {cfg.sep.mask!r}")
    if cfg.sep.loss not in ("auto", "bce", "l1"):
        raise ValueError(f"sep.loss must be auto, bce or l1, got {cfg.sep.loss!r}")
    if cfg.mix.form not in ("blend", "mosaic"):
        raise ValueError(f"mix.form must be blend or mosaic, got {cfg.mix.form!r}")
    if cfg.sep.n_mix < 2:
        raise ValueError("sep.n_mix must be >= 2")
    if cfg.optim.batch_size // dist.world_size() < max(2, cfg.sep.n_mix):
        raise ValueError("each process needs at least n_mix (>= 2) samples per batch to mix")
    fe = front_end(cfg)
    m = 2 ** cfg.model.unet_levels
    frames = fe.n_frames(cfg.data.audio.n_samples)
    if fe.n_freq_out % m or frames % m:
        raise ValueError(f"the separation grid {fe.n_freq_out} x {frames} (data.audio) is not divisible by "
                         f"2**model.unet_levels = {m}")


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


def main(cfg) -> dict:
    check_config(cfg)
    ctx: RunContext = start_run(cfg)
    device = ctx.device
    world = dist.world_size()
    per_rank = dist.per_rank_batch(cfg.optim.batch_size)
    model = build_model(cfg, device)
    opt = make_optimizer(model, cfg)
    objective = JointObjective(model, cfg)
    net = objective
    if world > 1:
        net = DDP(objective, device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=min(cfg.loss.w_loc, cfg.loss.w_sep, cfg.loss.w_mix) == 0)
    if cfg.train.compile:
        net = torch.compile(net)

    ds = train_set(cfg)
    sampler = ResumableSampler(len(ds), seed=cfg.run.seed, shuffle=True, drop_last=True)
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch == 0:
        raise ValueError(f"{len(ds)} training clips are fewer than one batch of {per_rank} per process")
    loader = DataLoader(ds, batch_size=per_rank, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=collate_skipping_bad, pin_memory=device.type == "cuda", drop_last=True,
                        prefetch_factor=4 if cfg.data.num_workers else None)
    loop = Loop(ctx, steps_per_epoch, epochs=cfg.optim.epochs, max_steps=cfg.train.max_steps,
                samples_per_step=per_rank * world)
    loop.register(model=model, optimizer=opt)
    loop.resume()
    while not loop.done:
        sampler.set_epoch(loop.epoch, start=loop.pos * per_rank)
        net.train()
        for batch in loop.epoch_batches(loader):
            loss, metrics = train_step(net, batch, opt, cfg, device, loop.step)
            loop.end_step(loss, metrics)
            loop.checkpoint_if_due()
    loop.finish()

    results = {}
    if dist.is_main() and cfg.eval.tasks:
        from projects.oneavm.eval import evaluate_all

        with loop.paused():
            results = evaluate_all(cfg, model, device, ctx.run_dir, classes=ds.classes)
        results.update(config=cfg.run.name, steps=loop.step, train_time_s=loop.clock.read())
        ctx.write_results(results)
        loop.log({f"test/{k}": v for k, v in _flat(results).items() if isinstance(v, (int, float))})
    ctx.close()
    dist.barrier()
    return results


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.oneavm.train")

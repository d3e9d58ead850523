"""Latent MIM pretraining (and the pixel-MAE baseline) on shared/loop.py.

    python -m projects.latent_mim.train --config projects/latent_mim/configs/<exp>.yaml [key=value ...]
    torchrun --nproc_per_node 8 -m projects.latent_mim.train --config ...
    python -m projects.latent_mim.train --config ... --cluster slurm --nodes 1 --gpus-per-node 8

One loader batch is one optimizer step: ``batch_size * accum_iter`` images per process, split into
``accum_iter`` micro-batches whose gradients are summed (each loss divided by accum_iter). At the
first micro-batch of a step the lr, EMA momentum and similarity target are set from the fractional
epoch and the EMA target is updated, *before* the targets are computed (the official order).
Masks and gap offsets come from a generator seeded by (seed, step, rank, micro-batch), crops from
the resumable sampler's per-sample seeds: a resumed run repeats the uninterrupted one.
"""
from __future__ import annotations

import logging
import sys

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.amp import autocast, grad_scaler
from shared.data.robust import collate_skipping_bad
from shared.data.sampling import ResumableSampler, sample_seed
from shared.loop import Loop
from shared.run import start_run
from projects.latent_mim.data import dataset
from projects.latent_mim.eval import evaluate_encoder
from projects.latent_mim.model import build_model, check_sizes
from projects.latent_mim.optim import build_optimizer, lr_at, momentum_at, peak_lr, sim_target_at

log = logging.getLogger(__name__)


class Schedules:
    def __init__(self, cfg, steps_per_epoch: int, world: int):
        self.o, self.l, self.spe = cfg.optim, cfg.loss, steps_per_epoch
        self.peak = peak_lr(cfg.optim, world)

    def at(self, step: int) -> dict:
        ep = step / self.spe
        o = self.o
        return {"lr": lr_at(ep, self.peak, o.epochs, o.warmup_epochs, o.min_lr_frac),
                "momentum": momentum_at(ep, o.epochs, o.target_mom),
                "sim_target": sim_target_at(ep, o.epochs, self.l.sim_init, self.l.sim_end)}


def train_step(net, core, opt, scaler, images: torch.Tensor, vals: dict, cfg, step: int, device) -> tuple:
    """One optimizer step over ``accum_iter`` micro-batches; (loss of the step, metrics averaged)."""
    accum = cfg.optim.accum_iter
    for g in opt.param_groups:
        g["lr"] = vals["lr"]
    core.update_target(vals["momentum"])
    chunks = images.chunk(accum)
    if len(chunks) != accum:
        raise ValueError(f"a step's batch of {len(images)} cannot be split into {accum} micro-batches")
    total, sums = 0.0, {}
    for i, x in enumerate(chunks):
        gen = torch.Generator().manual_seed(sample_seed(cfg.run.seed, step, dist.rank(), i))
        sync = i == accum - 1 or not isinstance(net, DDP)
        ctx = net.no_sync() if not sync else _null()
        with ctx:
            with autocast(device, cfg.train.amp):
                loss, metrics = net(x.to(device, non_blocking=True), gen, vals["sim_target"])
            scaler.scale(loss / accum).backward()
        total = total + loss.detach() / accum
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v.detach() / accum
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return total, sums


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def main(cfg) -> dict:
    check_sizes(cfg)
    ctx = start_run(cfg)
    device, world = ctx.device, dist.world_size()
    o = cfg.optim
    model = build_model(cfg).to(device)
    opt = build_optimizer(model, o, world)
    scaler = grad_scaler(device, cfg.train.amp)

    ds = dataset(cfg, "train", train_aug=True, size=cfg.data.train_subset)
    per_step = o.batch_size * o.accum_iter
    sampler = ResumableSampler(len(ds), seed=cfg.run.seed, shuffle=True, drop_last=True)
    steps_per_epoch = len(sampler) // per_step
    if steps_per_epoch == 0:
        raise ValueError(f"{len(ds)} images are fewer than one step of {per_step} per process "
                         f"(batch_size {o.batch_size} x accum_iter {o.accum_iter})")
    loader = DataLoader(ds, batch_size=per_step, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=collate_skipping_bad, pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=False, prefetch_factor=4 if cfg.data.num_workers else None)
    loop = Loop(ctx, steps_per_epoch, epochs=o.epochs, max_steps=cfg.train.max_steps,
                samples_per_step=per_step * world)
    loop.register(model=model, optimizer=opt, scaler=scaler)
    loop.vars["nn_val_top1"] = None
    loop.resume()
    if loop.done and (done := ctx.finished_results()) is not None:
        return done
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
              find_unused_parameters=False) if world > 1 else model
    fwd = torch.compile(net) if cfg.train.compile else net
    sched = Schedules(cfg, steps_per_epoch, world)
    log.info("%s: %d images, %d steps/epoch of %d x %d processes, peak lr %.3g", cfg.model.method, len(ds),
             steps_per_epoch, per_step, world, sched.peak)

    while not loop.done:
        sampler.set_epoch(loop.epoch, start=loop.pos * per_step)
        model.train()
        for batch in loop.epoch_batches(loader):
            vals = sched.at(loop.step)
            loss, metrics = train_step(fwd, model, opt, scaler, batch["views"], vals, cfg, loop.step, device)
            loop.end_step(loss, {**metrics, "train/lr": vals["lr"], "train/momentum": vals["momentum"],
                                 "train/sim_target": vals["sim_target"]})
            if cfg.eval.every_epochs and cfg.eval.nn_val and not loop.done and \
                    loop.itstime(every_epochs=cfg.eval.every_epochs, last=False):
                with loop.paused():
                    if dist.is_main():
                        res = evaluate_encoder(model.encoder, cfg, device, what=("nn_val",))
                        loop.vars["nn_val_top1"] = res["nn_val_top1"]
                        loop.log({"eval/nn_val_top1": res["nn_val_top1"]})
                    dist.barrier()
            loop.checkpoint_if_due()
    loop.finish()

    results = {"config": cfg.run.name, "method": cfg.model.method, "steps": loop.step,
               "train_time_s": loop.clock.read(), "effective_batch": per_step * world}
    if dist.is_main():
        results.update(evaluate_encoder(model.encoder, cfg, device))
        loop.log({f"eval/{k}": v for k, v in results.items() if k.endswith("_top1")})
        if cfg.eval.segmentation_images:
            from projects.latent_mim.segmentation import save_segmentations

            results["segmentation_figure"] = str(save_segmentations(model.encoder, cfg, device, ctx.run_dir))
    return ctx.finish(results, cfg.paper)


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.latent_mim.train")

"""Augmentation-invariance pretraining (MoCo v3 / SimCLR / DINO) with a sequence-compression schedule.

    python -m projects.accel_ssl.train --config projects/accel_ssl/configs/<exp>.yaml [key=value ...]
    torchrun --nproc_per_node 8 -m projects.accel_ssl.train --config ...
    python -m projects.accel_ssl.train --config ... --cluster slurm --nodes 4 --gpus-per-node 8

Runs on the shared loop (shared/loop.py: resume, cadence, the training clock that excludes
evaluation and checkpoints, per-rank RNG). Each step takes its compression Setting from
``compression.schedule`` at the current fraction of training; the step's trunk FLOPs are charged to
the budget. Every ``eval.every_steps`` a weighted k-NN is logged with the training time and FLOPs so
far (the accuracy-vs-time curve); at the end: k-NN (and optionally a linear probe) of the evaluated
encoder, training time and FLOPs in results.json.
"""
from __future__ import annotations

import logging
import sys

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.amp import autocast
from shared.data.robust import collate_skipping_bad
from shared.data.sampling import ResumableSampler, sample_seed
from shared.loop import Loop
from shared.run import RunContext, start_run
from shared.schedules import cosine_ramp, linear_warmup_constant, warmup_then_decay
from projects.accel_ssl.compression import Schedule
from projects.accel_ssl.data import pretrain_set, view_sizes
from projects.accel_ssl.eval import evaluate_encoder
from projects.accel_ssl.frameworks import DINO
from projects.accel_ssl.model import build_model

log = logging.getLogger(__name__)
CLIP_MODES = ("per_tensor", "global")


def validate(cfg) -> Schedule:
    """Settings checked when the config is read, before the run folder is made: every compression
    stage (patch > 0 and dividing every view, keep ratios in (0, 1]), the base patch, the clip mode."""
    for size in sorted(set(view_sizes(cfg)) | {cfg.model.img_size}):
        if size % cfg.model.patch_size:
            raise ValueError(f"model.patch_size={cfg.model.patch_size} does not divide the {size} px views")
    if cfg.optim.clip_mode not in CLIP_MODES:
        raise ValueError(f"optim.clip_mode must be one of {CLIP_MODES}, got {cfg.optim.clip_mode!r}")
    return Schedule.from_config(cfg.compression.schedule).validate(view_sizes(cfg), cfg.model.patch_size)


def param_groups(model, cfg) -> list[dict]:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not cfg.optim.wd_exclude_norm_bias:  # MoCo v3: AdamW decays every parameter
        return [{"params": [p for _, p in params], "apply_wd": True}]
    decay = [p for n, p in params if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in params if not (p.ndim > 1 and not n.endswith(".bias"))]
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


def step_values(cfg, step: int, total: int, steps_per_epoch: int) -> dict:
    o, m = cfg.optim, cfg.method
    world_batch = cfg.optim.batch_size
    lr = warmup_then_decay(step, total, o.warmup_epochs * steps_per_epoch, o.base_lr * world_batch / 256,
                           o.min_lr, o.decay, o.poly_power)
    wd = o.weight_decay if o.weight_decay_end is None else cosine_ramp(step, total, o.weight_decay, o.weight_decay_end)
    vals = {"lr": lr, "wd": wd, "momentum": cosine_ramp(step, total, m.momentum, 1.0)}
    if m.name == "dino":
        vals["teacher_temp"] = linear_warmup_constant(step, m.warmup_teacher_temp_epochs * steps_per_epoch,
                                                      m.warmup_teacher_temp, m.teacher_temp)
    return vals


@torch.no_grad()
def clip_gradients(params, clip: float, mode: str = "per_tensor") -> None:
    """``per_tensor``: DINO's clip_gradients, each parameter tensor's gradient scaled to norm <= clip
    (factor clip / (norm + 1e-6)); ``global``: torch's clip_grad_norm_ over all of them."""
    params = [p for p in params if p.grad is not None]
    if mode == "global":
        torch.nn.utils.clip_grad_norm_(params, clip)
        return
    for p in params:
        coef = clip / (p.grad.norm(2) + 1e-6)
        p.grad.mul_(coef.clamp(max=1.0))


def cancel_last_layer_grads(model: DINO) -> None:
    """DINO: the prototypes get no update during the first ``freeze_last_layer_epochs``."""
    for p in model.head.last_layer_params():
        p.grad = None


def prepare_grads(model, clip: float | None, mode: str, cancel_last_layer: bool) -> None:
    """After backward, before the optimizer step, in DINO's order: clip every gradient (the last layer's
    included), then drop the last layer's gradients while it is frozen."""
    if clip:
        clip_gradients(model.parameters(), clip, mode)
    if cancel_last_layer:
        cancel_last_layer_grads(model)


def equal_across_ranks(views: list[torch.Tensor], device) -> tuple[list[torch.Tensor], int]:
    """Views cut to the smallest per-rank batch (an unreadable image shrinks one rank's batch; the
    all-gathers need equal shapes): every rank drops its last samples down to that size. Returns the
    views and how many samples this rank dropped."""
    n = views[0].shape[0]
    if dist.world_size() == 1:
        return views, 0
    t = torch.tensor([n], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    m = int(t.item())
    return ([v[:m] for v in views], n - m) if m < n else (views, 0)


def main(cfg) -> dict:
    schedule = validate(cfg)
    ctx: RunContext = start_run(cfg)
    device, world = ctx.device, dist.world_size()
    per_rank = dist.per_rank_batch(cfg.optim.batch_size)
    model = build_model(cfg).to(device)
    model.precompute(schedule.patch_sizes(), device)
    if world > 1 and device.type == "cuda":  # BatchNorm heads become SyncBN under DDP (MoCo v3, DINO)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = torch.optim.AdamW(param_groups(model, cfg), lr=0.0, weight_decay=cfg.optim.weight_decay)

    ds = pretrain_set(cfg)
    sampler = ResumableSampler(len(ds), seed=cfg.run.seed, shuffle=True, drop_last=True)
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch == 0:
        raise ValueError(f"{len(ds)} images are fewer than one batch of {per_rank} per process")
    total = cfg.optim.epochs * steps_per_epoch  # the schedules span optim.epochs (train.max_steps may stop earlier)
    loader = DataLoader(ds, batch_size=per_rank, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=collate_skipping_bad, pin_memory=device.type == "cuda", drop_last=True,
                        prefetch_factor=4 if cfg.data.num_workers else None)
    sizes = view_sizes(cfg)

    loop = Loop(ctx, steps_per_epoch, epochs=cfg.optim.epochs, max_steps=cfg.train.max_steps,
                samples_per_step=cfg.optim.batch_size, desc=f"{cfg.method.name} {cfg.run.name}")
    loop.register(model=model, optimizer=opt)
    loop.vars.update(flops=0.0, dropped_for_equal_batches=0)
    loop.resume()
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
              find_unused_parameters=False) if world > 1 else model
    loss_fn = torch.compile(net) if cfg.train.compile else net
    freeze_last = cfg.method.freeze_last_layer_epochs * steps_per_epoch if isinstance(model, DINO) else 0

    def evaluate(linear_probe: bool | None = False, periodic: bool = False) -> dict:
        sizes = (cfg.eval.every_knn_train_size, cfg.eval.every_knn_test_size) if periodic else (None, None)
        out = evaluate_encoder(model.encoder(), cfg, device, linear_probe, *sizes) if dist.is_main() else {}
        dist.barrier()
        return out

    while not loop.done:
        sampler.set_epoch(loop.epoch, start=loop.pos * per_rank)
        net.train()
        for batch in loop.epoch_batches(loader):
            step = loop.step
            setting = schedule.at(step / total)
            vals = step_values(cfg, step, total, steps_per_epoch)
            for g in opt.param_groups:
                g["lr"] = vals["lr"]
                g["weight_decay"] = vals["wd"] if g.get("apply_wd", True) else 0.0
            views, dropped = equal_across_ranks([v.to(device, non_blocking=True) for v in batch["views"]], device)
            loop.vars["dropped_for_equal_batches"] += dropped
            gens = [torch.Generator(device).manual_seed(sample_seed(cfg.run.seed, step, dist.rank(), i))
                    for i in range(len(views) + 2)]
            noise = model.draw_noise(views, setting, gens)  # drawn outside the (compiled) forward
            with autocast(device, cfg.train.amp):
                loss, _ = loss_fn(views, setting, noise, teacher_temp=vals.get("teacher_temp", 0.04))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            prepare_grads(model, cfg.optim.clip_grad, cfg.optim.clip_mode, cancel_last_layer=step < freeze_last)
            opt.step()
            model.update_target(vals["momentum"])
            loop.vars["flops"] += model.step_flops(sizes, setting) * cfg.optim.batch_size
            loop.end_step(loss, {"train/lr": vals["lr"], "train/weight_decay": vals["wd"],
                                 "train/momentum": vals["momentum"], "train/keep_online": setting.keep("online", 0),
                                 "train/keep_target": setting.keep("target", 0), "train/patch": setting.patch or 0,
                                 "budget/tflops": loop.vars["flops"] / 1e12,
                                 **({"train/teacher_temp": vals["teacher_temp"]} if "teacher_temp" in vals else {}),
                                 **({"train/dropped_for_equal_batches": loop.vars["dropped_for_equal_batches"]}
                                    if world > 1 else {})})
            if cfg.eval.every_steps and not loop.done and loop.itstime(every_steps=cfg.eval.every_steps, last=False):
                with loop.paused():  # evaluation is not training time
                    knn = evaluate(periodic=True).get("knn_top1")
                    if knn is not None:
                        loop.log({"eval/knn_top1": knn, "budget/train_time_s": loop.clock.read(),
                                  "budget/tflops": loop.vars["flops"] / 1e12, "train/progress": loop.step / total})
                net.train()
            loop.checkpoint_if_due()
    loop.finish()

    results = {"config": cfg.run.name, "method": cfg.method.name, "schedule": schedule.to_config(), "steps": loop.step,
               "train_time_s": loop.clock.read(), "train_tflops": loop.vars["flops"] / 1e12,
               "dropped_for_equal_batches": loop.vars["dropped_for_equal_batches"]}
    final = evaluate(linear_probe=None)
    if dist.is_main():
        results.update(final)
        loop.log({f"eval/{k}": v for k, v in results.items() if isinstance(v, float) and k.startswith(("knn", "linear"))})
        results["paper"] = dict(cfg.paper) if cfg.paper else None
        ctx.write_results(results)
        log.info("results: %s", {k: v for k, v in results.items() if k != "schedule"})
    ctx.close()
    dist.barrier()
    return results


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.accel_ssl.train")

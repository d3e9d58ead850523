"""Augmentation-invariance pretraining (MoCo v3 / SimCLR / DINO) with a sequence-compression schedule.

    python -m projects.accel_ssl.train --config projects/accel_ssl/configs/<exp>.yaml [key=value ...]
    torchrun --nproc_per_node 8 -m projects.accel_ssl.train --config ...
    python -m projects.accel_ssl.train --config ... --cluster slurm --nodes 4 --gpus-per-node 8

Each step takes its compression Setting from ``compression.schedule`` at the current fraction of
training; the step's trunk FLOPs are charged to the budget. At the end: weighted k-NN (and
optionally a linear probe) of the evaluated encoder, wall time and FLOPs in results.json.
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.checkpoint import set_rng_state
from shared.data.robust import BadSampleMonitor, collate_skipping_bad
from shared.data.sampling import ResumableSampler, sample_seed
from shared.logging import progress
from shared.run import RunContext, start_run
from shared.schedules import cosine_ramp, linear_warmup_constant, warmup_then_decay
from projects.accel_ssl.compression import Schedule
from projects.accel_ssl.data import pretrain_set, view_sizes
from projects.accel_ssl.evaluate import evaluate_encoder
from projects.accel_ssl.frameworks import DINO, build_framework

log = logging.getLogger(__name__)


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


def autocast(device: torch.device, amp: str):
    if device.type == "cuda" and amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def main(cfg) -> dict:
    ctx: RunContext = start_run(cfg)
    device, world = ctx.device, dist.world_size()
    if cfg.optim.batch_size % world:
        raise ValueError(f"optim.batch_size={cfg.optim.batch_size} is not divisible by {world} processes")
    per_rank = cfg.optim.batch_size // world
    schedule = Schedule.from_config(cfg.compression.schedule)
    model = build_framework(cfg).to(device)
    if world > 1 and device.type == "cuda":  # MoCo v3 heads use SyncBN under DDP
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = torch.optim.AdamW(param_groups(model, cfg), lr=0.0, weight_decay=cfg.optim.weight_decay)

    ds = pretrain_set(cfg)
    sampler = ResumableSampler(len(ds), seed=cfg.run.seed, shuffle=True, drop_last=True)
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch == 0:
        raise ValueError(f"{len(ds)} images are fewer than one batch of {per_rank} per process")
    total = cfg.optim.epochs * steps_per_epoch
    loader = DataLoader(ds, batch_size=per_rank, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=collate_skipping_bad, pin_memory=device.type == "cuda", drop_last=True,
                        prefetch_factor=4 if cfg.data.num_workers else None)
    sizes = view_sizes(cfg)

    step, train_time, flops = 0, 0.0, 0.0
    state = ctx.resume()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, train_time, flops = state["step"], state["train_time"], state["flops"]
        set_rng_state(state["rng"])
    logger = ctx.open_logger(step if state is not None else None)
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
              find_unused_parameters=False) if world > 1 else model
    core = net.module if world > 1 else net
    loss_fn = torch.compile(net) if cfg.train.compile else net
    max_steps = min(total, cfg.train.max_steps or total)
    guard, monitor = ctx.nonfinite_guard(), BadSampleMonitor(cfg.data.max_bad_fraction, "train")
    freeze_last = cfg.method.freeze_last_layer_epochs * steps_per_epoch if isinstance(core, DINO) else 0
    snapshot = lambda: {"model": model.state_dict(), "optimizer": opt.state_dict(), "train_time": train_time,
                        "flops": flops}

    bar = progress(total=max_steps, initial=step, desc=f"{cfg.method.name} {cfg.run.name}")
    while step < max_steps:
        epoch, pos = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch, start=pos * per_rank)
        monitor.reset()
        net.train()
        t0 = time.perf_counter()
        for batch in loader:
            monitor.update(len(batch.get("index", [])), batch["bad"])
            if "views" not in batch:
                continue
            setting = schedule.at(step / total)
            vals = step_values(cfg, step, total, steps_per_epoch)
            for g in opt.param_groups:
                g["lr"] = vals["lr"]
                g["weight_decay"] = vals["wd"] if g.get("apply_wd", True) else 0.0
            views = [v.to(device, non_blocking=True) for v in batch["views"]]
            gens = [torch.Generator().manual_seed(sample_seed(cfg.run.seed, step, dist.rank(), i))
                    for i in range(len(views) + 2)]
            with autocast(device, cfg.train.amp):
                loss, _ = loss_fn(views, setting, gens, teacher_temp=vals.get("teacher_temp", 0.04))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if step < freeze_last:  # DINO: the prototypes stay fixed during the first epoch(s)
                for p in core.head.last_layer_params():
                    p.grad = None
            if cfg.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
            opt.step()
            core.update_target(vals["momentum"])
            step += 1
            flops += core.step_flops(sizes, setting) * cfg.optim.batch_size
            guard.update(loss, step)
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == max_steps:
                guard.check()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.perf_counter()
                train_time, t0 = train_time + now - t0, now
                logger.log(step, {"train/loss": dist.all_reduce_mean(loss.detach()).item(), "train/lr": vals["lr"],
                                  "train/weight_decay": vals["wd"], "train/momentum": vals["momentum"],
                                  "train/keep_online": setting.keep("online", 0), "train/patch": setting.patch or 0,
                                  "budget/tflops": flops / 1e12, "budget/train_time_s": train_time,
                                  **({"train/teacher_temp": vals["teacher_temp"]} if "teacher_temp" in vals else {})})
            if step == max_steps or (cfg.train.ckpt_every_steps and step % cfg.train.ckpt_every_steps == 0):
                guard.check()
                train_time, t0 = train_time + time.perf_counter() - t0, time.perf_counter()
                ctx.save(step, snapshot())
                t0 = time.perf_counter()  # checkpoint writing is not training time
            if cfg.eval.every_steps and step % cfg.eval.every_steps == 0 and step < max_steps:
                train_time += time.perf_counter() - t0  # evaluation is not training time
                if dist.is_main():
                    knn = evaluate_encoder(core.encoder(), cfg, device, linear_probe=False)["knn_top1"]
                    logger.log(step, {"eval/knn_top1": knn, "budget/train_time_s": train_time,
                                      "budget/tflops": flops / 1e12})
                dist.barrier()
                net.train()
                t0 = time.perf_counter()
            if step >= max_steps or step % steps_per_epoch == 0:
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time += time.perf_counter() - t0
        logger.log(step, monitor.summary())
    bar.close()

    results = {"config": cfg.run.name, "method": cfg.method.name, "schedule": schedule.to_config(), "steps": step,
               "train_time_s": train_time, "train_tflops": flops / 1e12}
    if dist.is_main():
        results.update(evaluate_encoder(core.encoder(), cfg, device))
        logger.log(step, {f"eval/{k}": v for k, v in results.items() if isinstance(v, float) and k.startswith(("knn", "linear"))})
        results["paper"] = dict(cfg.paper) if cfg.paper else None
        ctx.write_results(results)
        log.info("results: %s", {k: v for k, v in results.items() if k != "schedule"})
    ctx.close()
    dist.barrier()
    return results


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.accel_ssl.train")

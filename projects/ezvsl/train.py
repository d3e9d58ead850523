"""EZ-VSL training (official ``train.py``): Adam 1e-4, batch 128, the MIL contrastive loss, model
selection after every epoch, then the final evaluation on the configured test sets.

    python -m projects.ezvsl.train --config projects/ezvsl/configs/<exp>.yaml [key=value ...]
    torchrun --nproc_per_node 4 -m projects.ezvsl.train --config ...
    python -m projects.ezvsl.train --config ... --cluster slurm --partition P --gpus-per-node 4

Model selection (eval.selection): ``val`` (default) picks the epoch with the best AP50 (eval.selection_metric, official: AV) on a
held-out annotated validation set; ``test`` reproduces the official protocol (selection on the test
set, eval.selection_set); ``last`` takes the final epoch.
"""
from __future__ import annotations

import logging
import sys
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.checkpoint import load_weights, set_rng_state
from shared.data.robust import BadSampleMonitor, collate_skipping_bad
from shared.data.sampling import ResumableSampler
from shared.logging import progress
from shared.run import RunContext, start_run
from projects.ezvsl.data import train_set
from projects.ezvsl.eval import VARIANTS, autocast, eval_loader, evaluate, format_row, with_paper
from projects.ezvsl.losses import mil_contrastive_loss
from projects.ezvsl.model import EZVSL, ObjectSaliency

log = logging.getLogger(__name__)


def build_model(cfg, device: torch.device) -> EZVSL:
    model = EZVSL(cfg.model.out_dim, cfg.model.image_weights).to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def load_for_eval(cfg, model: EZVSL) -> str:
    """Load eval.checkpoint into ``model``: 'best' / 'last' of this run, 'init' (untrained), or a path
    (ours, or an official release file with the weights under 'model')."""
    from shared.run import run_dir_of

    which = cfg.eval.checkpoint
    ckpt_dir = run_dir_of(cfg) / "checkpoints"
    if which == "init":
        model.load_state_dict(EZVSL(cfg.model.out_dim, cfg.model.image_weights).state_dict())
        return "init"
    if which == "best":
        path = ckpt_dir / "best.pt"
    elif which == "last":
        from shared.checkpoint import CheckpointManager

        path = CheckpointManager(run_dir_of(cfg)).latest_path()
        if path is None:
            raise FileNotFoundError(f"no checkpoint in {ckpt_dir}; train first")
    else:
        path = which
    model.load_state_dict(load_weights(path, key="model"))
    return str(path)


def train_step(model, batch, opt, cfg, device) -> tuple[torch.Tensor, torch.Tensor]:
    image = batch["image"].to(device, non_blocking=True)
    spec = batch["spec"].to(device, non_blocking=True)
    if cfg.train.channels_last and device.type == "cuda":
        image = image.contiguous(memory_format=torch.channels_last)
    with autocast(device, cfg.train.amp):
        img, aud = model(image, spec)
    loss, av_maps = mil_contrastive_loss(img, aud, cfg.loss.tau, cfg.loss.gather_negatives)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), av_maps


def main(cfg) -> dict:
    ctx: RunContext = start_run(cfg)
    device = ctx.device
    world = dist.world_size()
    if cfg.optim.batch_size % world:
        raise ValueError(f"optim.batch_size={cfg.optim.batch_size} is not divisible by the {world} processes")
    per_rank = cfg.optim.batch_size // world

    model = build_model(cfg, device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    ogl = ObjectSaliency(cfg.model.ogl_weights).to(device)

    ds = train_set(cfg)
    sampler = ResumableSampler(len(ds), seed=cfg.run.seed, shuffle=True, drop_last=True)
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch == 0:
        raise ValueError(f"{len(ds)} training pairs are fewer than one batch of {per_rank} per process")
    loader = DataLoader(ds, batch_size=per_rank, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=collate_skipping_bad, pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=False, prefetch_factor=4 if cfg.data.num_workers else None)
    sel = cfg.eval.selection
    if sel not in ("val", "test", "last"):
        raise ValueError(f"eval.selection must be val, test or last, got {sel!r}")
    sel_loader = eval_loader(cfg, cfg.eval.val_set if sel == "val" else cfg.eval.selection_set) \
        if sel != "last" and dist.is_main() else None
    if sel == "val" and sel_loader is not None:
        leak = set(sel_loader.dataset.ids) & set(ds.ids) if sel_loader.dataset.dir == ds.dir else set()
        if leak:
            raise ValueError(f"{len(leak)} validation ids are also training ids (e.g. {sorted(leak)[:3]})")

    step, epoch, pos, best = 0, 0, 0, -1.0
    state = ctx.resume()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, epoch, pos, best = state["step"], state["epoch"], state["pos"], state["best"]
        set_rng_state(state["rng"])
    logger = ctx.open_logger(step if state is not None else None)
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    if cfg.train.compile:
        net = torch.compile(net)

    def snapshot():
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "pos": pos, "best": best}

    monitor = BadSampleMonitor(cfg.data.max_bad_fraction, "train")
    guard = ctx.nonfinite_guard()
    while epoch < cfg.optim.epochs:
        sampler.set_epoch(epoch, start=pos * per_rank)
        monitor.reset()
        net.train()
        t0, seen = time.time(), 0
        bar = progress(loader, total=steps_per_epoch, initial=pos, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}")
        for batch in bar:
            monitor.update(len(batch.get("index", [])), batch["bad"])
            if "image" not in batch:  # a whole batch unreadable: counted above, nothing to learn from
                pos += 1
                continue
            loss, _ = train_step(net, batch, opt, cfg, device)
            step, pos, seen = step + 1, pos + 1, seen + len(batch["index"])
            guard.update(loss, step)
            if step % cfg.train.log_every == 0 or pos == steps_per_epoch:
                guard.check()
                loss_v = dist.all_reduce_mean(loss).item()
                rate = seen * world / max(time.time() - t0, 1e-9)
                logger.log(step, {"train/loss": loss_v, "train/epoch": epoch + pos / steps_per_epoch,
                                  "train/lr": opt.param_groups[0]["lr"], "perf/clips_per_sec": rate})
                bar.set_postfix(loss=f"{loss_v:.3f}", refresh=False)
            if cfg.train.ckpt_every_steps and step % cfg.train.ckpt_every_steps == 0 and pos < steps_per_epoch:
                guard.check()
                ctx.save(step, snapshot())
        bar.close()
        guard.check()
        epoch, pos = epoch + 1, 0
        logger.log(step, monitor.summary())
        if sel_loader is not None and (epoch % cfg.eval.every == 0 or epoch == cfg.optim.epochs):
            m = evaluate(model, ogl, sel_loader, device, cfg.eval.alpha, cfg.loss.tau, cfg.train.amp,
                         max_bad_fraction=cfg.data.max_bad_fraction, desc=f"select ({sel})",
                         upsample=(cfg.eval.selection_upsample, cfg.eval.selection_upsample == "bilinear"))
            logger.log(step, {f"val/{k}_{n}": m[k][n] for k in VARIANTS for n in ("ciou_ap50", "auc")})
            log.info("epoch %d %s", epoch, format_row(f"select:{sel}", m))
            if m[cfg.eval.selection_metric]["ciou_ap50"] > best:
                best = m[cfg.eval.selection_metric]["ciou_ap50"]
                if dist.is_main():
                    ctx.ckpt.save_best({"model": model.state_dict(), "epoch": epoch, "step": step,
                                        "selection": sel, "ciou_ap50": best})
        elif sel == "last" and epoch == cfg.optim.epochs and dist.is_main():
            ctx.ckpt.save_best({"model": model.state_dict(), "epoch": epoch, "step": step, "selection": "last"})
        ctx.save(step, snapshot())

    results = final_eval(ctx, model, ogl, step) if dist.is_main() else {}
    ctx.close()
    dist.barrier()
    return results


def final_eval(ctx: RunContext, model, ogl, step: int) -> dict:
    cfg, device = ctx.cfg, ctx.device
    source = load_for_eval(cfg, model)
    results = {"config": cfg.run.name, "selection": cfg.eval.selection, "checkpoint": source, "sets": {}}
    for name in cfg.eval.test_sets:
        m = evaluate(model, ogl, eval_loader(cfg, name), device, cfg.eval.alpha, cfg.loss.tau, cfg.train.amp,
                     cfg.eval.n_visualizations, ctx.run_dir / "viz" / f"{name}_heatmaps.png",
                     cfg.data.max_bad_fraction, desc=f"test {name}")
        results["sets"][name] = with_paper(cfg, name, m)
        log.info(format_row(name, m))
        ctx.logger.log(step, {f"test/{name}/{k}_ciou_ap50": m[k]["ciou_ap50"] for k in VARIANTS if k in m})
    ctx.write_results(results)
    return results


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.ezvsl.train")

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

import numpy as np
import torch
from PIL import Image
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.amp import autocast
from shared.data.robust import collate_skipping_bad
from shared.data.sampling import ResumableSampler
from shared.loop import Loop
from shared.run import RunContext, start_run
from projects.ezvsl.data import train_set
from projects.ezvsl.eval import VARIANTS, eval_loader, evaluate, format_row, load_for_eval, with_paper
from projects.ezvsl.losses import mil_contrastive_loss
from projects.ezvsl.model import ObjectSaliency, build_model

log = logging.getLogger(__name__)


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
    per_rank = dist.per_rank_batch(cfg.optim.batch_size)

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

    loop = Loop(ctx, steps_per_epoch, epochs=cfg.optim.epochs, samples_per_step=cfg.optim.batch_size,
                desc=f"ezvsl {cfg.run.name}")
    loop.register(model=model, optimizer=opt)
    loop.vars["best"] = -1.0
    loop.resume()
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    if cfg.train.compile:
        net = torch.compile(net)

    while not loop.done:
        sampler.set_epoch(loop.epoch, start=loop.pos * per_rank)
        net.train()
        for batch in loop.epoch_batches(loader):
            loss, _ = train_step(net, batch, opt, cfg, device)
            loop.end_step(loss, {"train/lr": opt.param_groups[0]["lr"]})
            if sel_loader is not None and loop.itstime(every_epochs=cfg.eval.every):
                with loop.paused():
                    select(loop, model, ogl, sel_loader, sel, device)
            elif sel == "last" and loop.done and dist.is_main():
                ctx.ckpt.save_best({"model": model.state_dict(), "epoch": loop.epoch, "step": loop.step,
                                    "selection": "last"})
            loop.checkpoint_if_due()
    loop.finish()

    results = final_eval(ctx, model, ogl, loop.step) if dist.is_main() else {}
    ctx.close()
    dist.barrier()
    return results


def select(loop: Loop, model, ogl, sel_loader, sel: str, device) -> None:
    """Model selection after an epoch: a new best.pt when the selection AP50 is at least the best so far
    (``>=`` as the official code: on a tie the later epoch wins)."""
    cfg = loop.cfg
    m = evaluate(model, ogl, sel_loader, device, cfg.eval.alpha, cfg.loss.tau, cfg.train.amp,
                 max_bad_fraction=cfg.data.max_bad_fraction, desc=f"select ({sel})",
                 upsample=(cfg.eval.selection_upsample, cfg.eval.selection_upsample == "bilinear"))
    loop.log({f"val/{k}_{n}": m[k][n] for k in VARIANTS for n in ("ciou_ap50", "auc")})
    log.info("epoch %d %s", loop.epoch, format_row(f"select:{sel}", m))
    score = m[cfg.eval.selection_metric]["ciou_ap50"]
    if score >= loop.vars["best"]:
        loop.vars["best"] = score
        loop.ctx.ckpt.save_best({"model": model.state_dict(), "epoch": loop.epoch, "step": loop.step,
                                 "selection": sel, "ciou_ap50": score})


def final_eval(ctx: RunContext, model, ogl, step: int) -> dict:
    cfg, device = ctx.cfg, ctx.device
    source = load_for_eval(cfg, model)
    results = {"config": cfg.run.name, "selection": cfg.eval.selection, "checkpoint": source,
               "precision": {"train_amp": cfg.train.amp if device.type == "cuda" else "none (CPU)",
                             "eval_maps": "fp32"}, "sets": {}}
    for name in cfg.eval.test_sets:
        viz = ctx.run_dir / "viz" / f"{name}_heatmaps.png"
        m = evaluate(model, ogl, eval_loader(cfg, name), device, cfg.eval.alpha, cfg.loss.tau, cfg.train.amp,
                     cfg.eval.n_visualizations, viz, cfg.data.max_bad_fraction, desc=f"test {name}")
        results["sets"][name] = with_paper(cfg, name, m)
        log.info(format_row(name, m))
        ctx.logger.log(step, {f"test/{name}/{k}_ciou_ap50": m[k]["ciou_ap50"] for k in VARIANTS if k in m})
        if viz.is_file() and ctx.logger.writer is not None:
            ctx.logger.writer.add_image(f"test/{name}/heatmaps", np.asarray(Image.open(viz).convert("RGB")), step,
                                        dataformats="HWC")
    ctx.write_results(results)
    return results


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.ezvsl.train")

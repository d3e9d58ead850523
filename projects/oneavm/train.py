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

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.data.robust import collate_skipping_bad
from shared.data.sampling import ResumableSampler
from shared.loop import Loop
from shared.run import RunContext, start_run
from projects.oneavm.data import train_set
from projects.oneavm.frontend import front_end
from projects.oneavm.model import build_model
from projects.oneavm.objective import JointObjective, make_optimizer, train_step

log = logging.getLogger(__name__)


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

"""SimSiam on a single-pass stream through a replay buffer (official ``worker_buffered_simsiam.py``).

    python -m projects.minred.train --config projects/minred/configs/<exp>.yaml [key=value ...]
    torchrun --nproc_per_node 4 -m projects.minred.train --config ...
    python -m projects.minred.train --config ... --cluster slurm --gpus-per-node 4

Each process takes its share of the stream (whole per-process batches, or video blocks, dealt
round-robin), feeds it chunk by chunk to its own buffer, and trains on the batches the buffer
draws. After every step the buffer receives the projector outputs (MinRed keeps them as features).
The lr follows the official schedule over the whole run (steps = |stream| x updates / batch). The
buffer's whole state is in the checkpoint: a killed run resumes on exactly the same batches.
"""
from __future__ import annotations

import json
import logging
import math
import sys

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.amp import autocast
from shared.checkpoint import atomic_torch_save, load_weights
from shared.data.robust import collate_skipping_bad
from shared.loop import Loop
from shared.logging import purge_jsonl
from shared.run import start_run
from projects.minred import data as data_mod
from projects.minred.buffer import build_buffer
from projects.minred.probes import evaluate_backbone
from projects.minred.model import SimSiam, build_model, build_optimizer, learning_rate, set_lr, simsiam_loss
from projects.minred import streams

log = logging.getLogger(__name__)


def load_pretrained(model: SimSiam, path: str) -> None:
    """The official checkpoint format: {'state_dict': DDP keys 'module.encoder...'}."""
    sd = load_weights(path, key="state_dict")
    model.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()})


def rank_stream(cfg, n: int, labels, rank: int, world: int, epoch: int = 0) -> list[int]:
    """This process's share of the stream of ``epoch``."""
    d = cfg.data
    return streams.rank_stream(d.stream, n, cfg.optim.batch_size, rank, world, cfg.run.seed, epoch, d.n_seq_samples,
                               labels)


def build_stream_buffer(cfg, n: int, labels, rank: int, world: int, device: torch.device):
    b = cfg.buffer
    per_rank = dist.per_rank_batch(cfg.optim.batch_size)
    extra = {}
    if b.type == "minred":
        fdev = device if b.feature_device == "auto" else torch.device(b.feature_device)
        extra = {"gamma": b.gamma, "limit_num_seen_coeff": b.limit_num_seen_coeff, "device": fdev,
                 "max_block_bytes": int(b.max_block_mb) * 2**20}
    return build_buffer(b.type, rank_stream(cfg, n, labels, rank, world), per_rank, b.size, b.num_updates,
                        cfg.run.seed, rank, world, cfg.optim.epochs,
                        stream_of_epoch=lambda e: rank_stream(cfg, n, labels, rank, world, e), **extra)


class BufferCheckpoint:
    """The buffers of all processes in the checkpoint (each process has its own; rank 0 writes)."""

    def __init__(self, buffer, consumed):
        self.buffer, self.consumed = buffer, consumed

    def state_dict(self):
        self.buffer.trained = self.consumed()
        return {"per_rank": dist.all_gather_object(self.buffer.state_dict())}

    def load_state_dict(self, state):
        per_rank = state["per_rank"]
        if len(per_rank) != dist.world_size():
            raise ValueError(f"the checkpoint holds the buffers of {len(per_rank)} processes, this run has "
                             f"{dist.world_size()}: a buffer run resumes with the same number of processes")
        self.buffer.load_state_dict(per_rank[dist.rank()])


def label_histogram(buffer, labels, num_classes: int) -> list[int]:
    items = buffer.contents() if hasattr(buffer, "contents") else []
    return np.bincount(np.asarray(labels)[items], minlength=num_classes).tolist() if items else [0] * num_classes


def main(cfg) -> dict:
    ctx = start_run(cfg)
    device, world, rank = ctx.device, dist.world_size(), dist.rank()
    ds, labels = data_mod.train_set(cfg)
    buf = build_stream_buffer(cfg, len(ds), labels, rank, world, device)
    total = len(buf)
    model = build_model(cfg)
    if cfg.model.pretrained:  # the continual-ImageNet start; a resumed run then overwrites it from its checkpoint
        load_pretrained(model, cfg.model.pretrained)
    model = model.to(device)
    if world > 1 and device.type == "cuda" and cfg.model.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if device.type == "cuda" and cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.fix_pred_lr)
    workers = int(cfg.data.num_workers)
    loader = DataLoader(ds, batch_sampler=buf, num_workers=workers, collate_fn=collate_skipping_bad,
                        pin_memory=device.type == "cuda", prefetch_factor=1 if workers else None,
                        persistent_workers=False)

    loop = Loop(ctx, steps_per_epoch=total, epochs=1, max_steps=cfg.train.max_steps,
                samples_per_step=cfg.optim.batch_size)
    loop.register(model=model, optimizer=opt,
                  buffer=BufferCheckpoint(buf, lambda: loop.epoch * loop.steps_per_epoch + loop.pos))
    loop.resume()
    if loop.done and (done := ctx.finished_results()) is not None:
        return done
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    o = cfg.optim
    snap_every = max(1, math.ceil(cfg.train.snapshot_every * total)) if cfg.train.snapshot_every else 0
    hist_path = ctx.run_dir / "buffer_histogram.jsonl"
    if dist.is_main():  # what a killed run recorded after its last checkpoint goes, as in metrics.jsonl
        purge_jsonl(hist_path, loop.step)
    num_classes = int(labels.max()) + 1 if labels is not None else 0

    net.train()
    while not loop.done:
        for batch in loop.epoch_batches(loader):
            lr = learning_rate(o.lr, (loop.step + 1) / total, o.lr_schedule, o.exit_decay, 1.0, o.lr_period, o.lr_max,
                               total)
            set_lr(opt, lr, o.lr)
            x1, x2 = (v.to(device, non_blocking=True) for v in batch["views"])
            if device.type == "cuda" and cfg.model.channels_last:
                x1, x2 = x1.to(memory_format=torch.channels_last), x2.to(memory_format=torch.channels_last)
            with autocast(device, cfg.train.amp):
                p1, p2, z1, z2 = net(x1, x2)
            loss_ps = simsiam_loss(p1.float(), p2.float(), z1.float(), z2.float())
            loss = loss_ps.mean()
            buf.update(batch["index"], z1, z2, loss_ps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            buf.mark_trained()
            extra = {"train/lr": lr}
            if loop.log_every and (loop.step + 1) % loop.log_every == 0:
                extra.update(buf.stats())
            loop.end_step(loss, extra)
            if cfg.train.buffer_log_every and labels is not None and loop.step % cfg.train.buffer_log_every == 0 \
                    and dist.is_main():
                with loop.paused(), open(hist_path, "a") as f:
                    f.write(json.dumps({"step": loop.step, "stream_pos": buf.head,
                                        "hist": label_histogram(buf, labels, num_classes)}) + "\n")
            if snap_every and (loop.step % snap_every == 0 or loop.step == total) and dist.is_main():
                with loop.paused():
                    (ctx.run_dir / "snapshots").mkdir(exist_ok=True)
                    atomic_torch_save({"state_dict": model.state_dict(), "step": loop.step, "progress": loop.step / total},
                                      ctx.run_dir / "snapshots" / f"checkpoint_{loop.step / total:010.4f}.pth")
            loop.checkpoint_if_due()
    loop.finish()

    results = {"config": cfg.run.name, "buffer": cfg.buffer.type, "steps": loop.step, "total_steps": total,
               "train_time_s": loop.clock.read(), "stream_samples_per_process": len(buf.stream)}
    if loop.step >= total and dist.is_main() and cfg.eval.datasets:
        with loop.paused():
            results.update(evaluate_backbone(model, cfg, device, data_mod.probe_sets(cfg)))
        loop.log({f"eval/{k}": v for k, v in results.items() if isinstance(v, float) and "/" in k})
    return ctx.finish(results, cfg.paper)


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.minred.train")

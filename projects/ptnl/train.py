"""One PTNL run: CoOp prompt tuning of a frozen CLIP on a noisy few-shot set (method=coop), UPL or
robust UPL on zero-shot pseudo-labels (method=upl | robust_upl), or a baseline (zeroshot,
linear_probe); then the test split. Writes results.json and test_logits.pt to the run folder.

    python -m projects.ptnl.train --config projects/ptnl/configs/dtd.yaml data.root=$DATA_ROOT \
        fewshot.noise_rate=0.5 loss.name=gce run.seed=2 run.name=dtd_random0.5_gce_seed2
    python -m projects.ptnl.train --config ... --cluster slurm --partition gpu --gpus-per-node 1
    python -m projects.ptnl.sweep --grid projects/ptnl/configs/sweeps/noise_rn50.yaml ...   (whole grids)

Optimisation as the official rn50_ep50 config: SGD (lr 0.002, momentum 0.9, weight decay 5e-4) on
the context vectors only, batch 32 (last partial batch dropped when there are >= 32 samples), 50
epochs, one constant warm-up epoch at 1e-5 then cosine (stepped per epoch); the last epoch's model
is evaluated.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time

import torch
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.checkpoint import set_rng_state
from shared.clip.datasets import ImageListDataset
from shared.clip.zeroshot import autocast
from shared.data.sampling import ResumableSampler
from shared.logging import progress
from shared.run import RunContext, start_run
from projects.ptnl.data import build_dataset, eval_loader, load_cfg_clip, select_train, test_transform, train_transform
from projects.ptnl.eval import classification_metrics, linear_probe_eval, predict, zero_shot_eval
from projects.ptnl.losses import build_loss
from projects.ptnl.model import CoOpCLIP

log = logging.getLogger(__name__)
METHODS = ("coop", "upl", "robust_upl", "zeroshot", "linear_probe")


def lr_at_epoch(epoch: int, cfg) -> float:
    """Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T_max=epochs) with WARMUP_RECOUNT:
    warm-up epochs at warmup_lr, then base * (1 + cos(pi * (epoch - warmup) / epochs)) / 2."""
    o = cfg.optim
    if epoch < o.warmup_epochs:
        return float(o.warmup_lr)
    return 0.5 * o.lr * (1 + math.cos(math.pi * (epoch - o.warmup_epochs) / o.epochs))


def build_model(cfg, bundle, classnames, device) -> CoOpCLIP:
    p = cfg.prompt
    return CoOpCLIP(bundle.model, bundle.tokenizer, classnames, n_ctx=p.n_ctx, ctx_init=p.ctx_init, csc=p.csc,
                    class_token_position=p.class_token_position, init_std=p.init_std).to(device)


def run_name(cfg) -> str:
    """A descriptive run name for sweeps: <dataset>_<method>[_<noise><rate>]_<loss>_<arch>_seed<s>."""
    parts = [str(cfg.data.dataset), cfg.method]
    if cfg.method in ("coop", "linear_probe"):
        parts.append(f"{cfg.fewshot.noise_type}{cfg.fewshot.noise_rate:g}")
    if cfg.method in ("coop", "upl", "robust_upl"):
        parts.append(cfg.loss.name + (f"{cfg.loss.q:g}" if cfg.loss.name == "gce" else ""))
    parts += [str(cfg.clip.arch).replace("/", "-"), f"seed{cfg.run.seed}"]
    return "_".join(parts)


def _results_base(cfg, ds, bundle) -> dict:
    return {"config": cfg.run.name, "dataset": ds.name, "method": cfg.method, "arch": bundle.name,
            "weights": bundle.source, "seed": cfg.run.seed, "classes": ds.num_classes,
            "paper": cfg.paper.to_dict() if hasattr(cfg.paper, "to_dict") else dict(cfg.paper)}


def _finish(ctx: RunContext, results: dict, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    if ctx.cfg.eval.save_logits and dist.is_main():
        from shared.checkpoint import atomic_torch_save

        atomic_torch_save({"logits": logits.half(), "labels": labels}, ctx.run_dir / "test_logits.pt")
    ctx.write_results(results)
    log.info("%s: test accuracy %.2f%%", ctx.cfg.run.name, results["test"]["accuracy"])
    return results


def main(cfg) -> dict:
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {cfg.method!r}")
    ctx: RunContext = start_run(cfg)
    device = ctx.device
    if device.type == "cpu" and cfg.train.cpu_threads:
        torch.set_num_threads(int(cfg.train.cpu_threads))
    if dist.world_size() > 1:
        raise ValueError("PTNL runs are single-GPU (8,192 trainable numbers); launch one process per run "
                         "(the sweep submits one job per dataset x noise x seed)")
    done = ctx.run_dir / "results.json"
    if done.is_file() and cfg.run.resume == "auto":
        log.info("%s is complete; delete results.json to run it again", ctx.run_dir)
        return json.loads(done.read_text())
    ds = build_dataset(cfg)
    bundle = load_cfg_clip(cfg, device)
    bundle.model.to(device)
    results = _results_base(cfg, ds, bundle)

    if cfg.method == "zeroshot":
        m, logits, labels = zero_shot_eval(bundle, ds, cfg, device)
        results["test"] = m
        return _finish(ctx, results, logits, labels)

    sel = select_train(cfg, ds, device, bundle)
    results["train_set"] = sel.summary(ds.num_classes)
    if cfg.method in ("coop", "linear_probe"):
        results["noise"] = {"type": cfg.fewshot.noise_type, "rate": cfg.fewshot.noise_rate, "shots": cfg.fewshot.shots}
    log.info("training set: %s", results["train_set"])
    if cfg.method == "linear_probe":
        m, logits, labels = linear_probe_eval(bundle, ds, sel, cfg, device)
        results["test"] = m
        return _finish(ctx, results, logits, labels)

    model = build_model(cfg, bundle, ds.classnames, device)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if trainable != ["prompt_learner.ctx"]:
        raise RuntimeError(f"only the context vectors may be trained, found {trainable}")
    opt = torch.optim.SGD([model.prompt_learner.ctx], lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay, dampening=0, nesterov=False)
    loss_fn = build_loss(cfg.loss.name, cfg.loss.q)
    train_items = [ds.train[i] for i in sel.indices]
    train_ds = ImageListDataset(train_items, train_transform(cfg, bundle.image_size), sel.labels)
    bs = cfg.optim.batch_size
    drop_last = len(train_ds) >= bs
    sampler = ResumableSampler(len(train_ds), seed=cfg.run.seed, shuffle=True, drop_last=False)
    steps_per_epoch = len(train_ds) // bs if drop_last else math.ceil(len(train_ds) / bs)
    loader = DataLoader(train_ds, batch_size=bs, sampler=sampler, num_workers=cfg.data.num_workers,
                        drop_last=drop_last, pin_memory=device.type == "cuda",
                        persistent_workers=False)

    step, epoch, pos = 0, 0, 0
    state = ctx.resume()
    if state is not None:
        model.prompt_learner.load_state_dict(state["prompt_learner"])
        opt.load_state_dict(state["optimizer"])
        step, epoch, pos = state["step"], state["epoch"], state["pos"]
        set_rng_state(state["rng"])
    logger = ctx.open_logger(step if state is not None else None)

    def snapshot():
        return {"prompt_learner": model.prompt_learner.state_dict(), "optimizer": opt.state_dict(),
                "epoch": epoch, "pos": pos}

    guard = ctx.nonfinite_guard()
    amp = cfg.train.amp
    t_start = time.time()
    while epoch < cfg.optim.epochs:
        lr = lr_at_epoch(epoch, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        sampler.set_epoch(epoch, start=pos * bs)
        model.train()
        bar = progress(loader, total=steps_per_epoch, initial=pos, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}")
        correct = seen = 0
        for batch in bar:
            images = batch["image"].to(device, non_blocking=True)
            labels = torch.as_tensor(batch["label"], device=device)
            with autocast(device, amp):
                logits = model(images)
            loss = loss_fn(logits.float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, pos = step + 1, pos + 1
            guard.update(loss, step)
            correct += int((logits.argmax(-1).cpu() == torch.as_tensor(batch["true_label"])).sum())
            seen += len(labels)
            if step % cfg.train.log_every == 0 or pos == steps_per_epoch:
                guard.check()
                logger.log(step, {"train/loss": loss.item(), "train/lr": lr,
                                  "train/epoch": epoch + pos / steps_per_epoch,
                                  "train/acc_vs_true_labels": 100 * correct / max(seen, 1)})
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if cfg.train.ckpt_every_steps and step % cfg.train.ckpt_every_steps == 0 and pos < steps_per_epoch:
                guard.check()
                ctx.save(step, snapshot())
        bar.close()
        guard.check()
        epoch, pos = epoch + 1, 0
        ctx.save(step, snapshot())

    test_loader = eval_loader(ds.test, test_transform(bundle.image_size), cfg, device=device)
    logits, labels = predict(model, test_loader, device, amp, desc=f"test {ds.name}")
    results["test"] = classification_metrics(logits, labels, ds.num_classes)
    results["train_steps"] = step
    results["train_time_s"] = time.time() - t_start
    results["loss"] = {"name": cfg.loss.name, "q": cfg.loss.q}
    ctx.close()
    return _finish(ctx, results, logits, labels)


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.ptnl.train")

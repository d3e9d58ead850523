"""One PTNL run: CoOp prompt tuning of a frozen CLIP on a noisy few-shot set (method=coop), UPL or
robust UPL on zero-shot pseudo-labels (method=upl | robust_upl), or a baseline (zeroshot,
linear_probe); then the test split. Writes results.json and test_logits.pt to the run folder.

    python -m projects.ptnl.train --config projects/ptnl/configs/dtd.yaml data.root=$DATA_ROOT \
        fewshot.noise_rate=0.5 loss.name=gce run.seed=2 run.name=dtd_random0.5_gce_seed2
    python -m projects.ptnl.train --config ... --cluster slurm --partition gpu --gpus-per-node 1
    python -m shared.sweep --grid projects/ptnl/configs/sweeps/noise_rn50.yaml ...   (whole grids)

Optimisation as the official rn50_ep50 config: SGD (lr 0.002, momentum 0.9, weight decay 5e-4) on
the context vectors only, batch 32 (last partial batch dropped when there are >= 32 samples), 50
epochs, one constant warm-up epoch at 1e-5 then cosine (stepped per epoch); the last epoch's model
is evaluated.
"""
from __future__ import annotations

import logging
import math
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.amp import autocast
from shared.clip.datasets import ImageListDataset, labels_of
from shared.data.sampling import ResumableSampler
from shared.loop import Loop
from shared.run import RunContext, start_run
from projects.ptnl.data import build_dataset, eval_loader, load_cfg_clip, select_train, test_transform, train_transform
from projects.ptnl.eval import classification_metrics, linear_probe_eval, predict, zero_shot_eval
from projects.ptnl.losses import build_loss
from projects.ptnl.model import build_model
from projects.ptnl.noise import NOISE_TYPES, num_fp_for

log = logging.getLogger(__name__)
METHODS = ("coop", "upl", "robust_upl", "zeroshot", "linear_probe")


def lr_at_epoch(epoch: int, cfg) -> float:
    """Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T_max=epochs) with WARMUP_RECOUNT:
    warm-up epochs at warmup_lr, then base * (1 + cos(pi * (epoch - warmup) / epochs)) / 2."""
    o = cfg.optim
    if epoch < o.warmup_epochs:
        return float(o.warmup_lr)
    return 0.5 * o.lr * (1 + math.cos(math.pi * (epoch - o.warmup_epochs) / o.epochs))


def validate_config(cfg) -> None:
    """Every setting checked before anything runs (issue: a noise rate of 1.5 used to fail deep in the
    sampler with a message about whole numbers)."""
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {cfg.method!r}")
    fs = cfg.fewshot
    if fs.noise_type not in NOISE_TYPES:
        raise ValueError(f"fewshot.noise_type must be one of {NOISE_TYPES}, got {fs.noise_type!r}")
    if not (isinstance(fs.shots, int) and fs.shots >= 1):
        raise ValueError(f"fewshot.shots must be a whole number >= 1, got {fs.shots!r}")
    rate = fs.noise_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"fewshot.noise_rate is the fraction of wrong shots per class, in [0, 1); got {rate!r}")
    if cfg.method in ("coop", "linear_probe"):
        num_fp_for(rate, fs.shots)  # rate x shots must be whole: the error names the nearest valid rate
    if cfg.method in ("upl", "robust_upl") and not (isinstance(cfg.pseudo.k, int) and cfg.pseudo.k >= 1):
        raise ValueError(f"pseudo.k must be a whole number >= 1, got {cfg.pseudo.k!r}")
    if cfg.loss.name not in ("ce", "gce"):
        raise ValueError(f"loss.name must be ce or gce, got {cfg.loss.name!r}")
    if cfg.loss.name == "gce" and not cfg.loss.q > 0:
        raise ValueError(f"loss.q must be > 0 for GCE, got {cfg.loss.q!r}")
    if cfg.prompt.class_token_position not in ("end", "middle", "front"):
        raise ValueError(f"prompt.class_token_position must be end, middle or front, got "
                         f"{cfg.prompt.class_token_position!r}")
    if not (isinstance(cfg.prompt.n_ctx, int) and cfg.prompt.n_ctx >= 1) and not cfg.prompt.ctx_init:
        raise ValueError(f"prompt.n_ctx must be a whole number >= 1, got {cfg.prompt.n_ctx!r}")
    o = cfg.optim
    if not (isinstance(o.epochs, int) and o.epochs >= 1 and isinstance(o.batch_size, int) and o.batch_size >= 1):
        raise ValueError(f"optim.epochs and optim.batch_size must be whole numbers >= 1, got {o.epochs!r}, "
                         f"{o.batch_size!r}")
    if not (isinstance(o.warmup_epochs, int) and o.warmup_epochs >= 0):
        raise ValueError(f"optim.warmup_epochs must be a whole number >= 0, got {o.warmup_epochs!r}")


def check_shots_fit(cfg, ds) -> None:
    """The official sampler takes each class's shots from the first half of its training images and
    silently draws with replacement (fewer distinct shots) when that half is smaller than the shots:
    an error here, naming the classes, unless ``fewshot.allow_fewer_shots`` (the official behaviour)."""
    if cfg.method not in ("coop", "linear_probe") or cfg.fewshot.allow_fewer_shots:
        return
    counts = np.bincount(labels_of(ds.train), minlength=ds.num_classes)
    pools = -(-counts // 2)  # ceil(n_c / 2): the clean pool
    short = np.flatnonzero(pools < cfg.fewshot.shots)
    if len(short):
        names = ", ".join(f"{ds.classnames[c]!r} ({counts[c]} images, pool {pools[c]})" for c in short[:5])
        raise ValueError(
            f"fewshot.shots={cfg.fewshot.shots}, but the shots of a class come from the first half of its training "
            f"images and {len(short)} class(es) of {ds.name} have fewer: {names}{' ...' if len(short) > 5 else ''}. "
            f"Lower fewshot.shots to at most {int(pools.min())}, or set fewshot.allow_fewer_shots=true for the "
            "official behaviour (draw with replacement, duplicates collapse: fewer distinct shots).")


def run_name(cfg) -> str:
    """A descriptive run name for sweeps: <dataset>_<method>[_<noise><rate>]_<loss>_<arch>_seed<s>.
    shared.sweep calls it for every job while expanding a grid: the settings are validated there too,
    before anything is submitted."""
    validate_config(cfg)
    parts = [str(cfg.data.dataset), cfg.method]
    if cfg.method in ("coop", "linear_probe"):
        parts.append(f"{cfg.fewshot.noise_type}{cfg.fewshot.noise_rate:g}")
    if cfg.method in ("coop", "upl", "robust_upl"):
        parts.append(cfg.loss.name + (f"{cfg.loss.q:g}" if cfg.loss.name == "gce" else ""))
    parts += [str(cfg.clip.arch).replace("/", "-"), f"seed{cfg.run.seed}"]
    return "_".join(parts)


def sweep_settings(results: dict) -> dict:
    """shared.sweep: the columns identifying a gathered row (everything but the seed)."""
    noise = results.get("noise") or {}
    loss = results.get("loss") or {}
    return {"dataset": results["dataset"], "method": results["method"], "arch": results["arch"],
            "noise_type": noise.get("type", "-"), "noise_rate": noise.get("rate", "-"),
            "loss": (loss.get("name", "-") + (f" q={loss['q']:g}" if loss.get("name") == "gce" else ""))
            if loss else "-"}


def sweep_values(results: dict) -> dict:
    """shared.sweep: more numbers averaged over seeds: the measured label noise of the training set."""
    return {"train_noise": (results.get("train_set") or {}).get("noise_rate")}


def _results_base(cfg, ds, bundle, inputs: dict | None) -> dict:
    return {"config": cfg.run.name, "dataset": ds.name, "method": cfg.method, "arch": bundle.name,
            "weights": bundle.source, "inputs": inputs, "seed": cfg.run.seed, "classes": ds.num_classes,
            "paper": cfg.paper.to_dict() if hasattr(cfg.paper, "to_dict") else dict(cfg.paper)}


def _finish(ctx: RunContext, results: dict, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    if ctx.cfg.eval.save_logits and dist.is_main():
        from shared.checkpoint import atomic_torch_save

        atomic_torch_save({"logits": logits.half(), "labels": labels}, ctx.run_dir / "test_logits.pt")
    ctx.write_results(results)
    log.info("%s: test accuracy %.2f%%", ctx.cfg.run.name, results["test"]["accuracy"])
    ctx.close()
    return results


def main(cfg) -> dict:
    validate_config(cfg)
    if dist.world_size() > 1:
        raise ValueError("PTNL runs are single-GPU (8,192 trainable numbers); launch one process per run "
                         "(the sweep submits one job per dataset x noise x seed)")
    ds = build_dataset(cfg)
    check_shots_fit(cfg, ds)
    ctx: RunContext = start_run(cfg)
    device = ctx.device
    if device.type == "cpu" and cfg.train.cpu_threads:
        torch.set_num_threads(int(cfg.train.cpu_threads))
    if (done := ctx.finished_results()) is not None:
        return done
    bundle = load_cfg_clip(cfg, device)
    bundle.model.to(device)
    results = _results_base(cfg, ds, bundle, ctx.inputs)

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

    model = build_model(cfg, ds.classnames, bundle, device)
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
                        drop_last=drop_last, pin_memory=device.type == "cuda", persistent_workers=False)

    loop = Loop(ctx, steps_per_epoch, epochs=cfg.optim.epochs, samples_per_step=bs)
    loop.register(prompt_learner=model.prompt_learner, optimizer=opt)
    loop.resume()
    amp = cfg.train.amp
    while not loop.done:
        lr = lr_at_epoch(loop.epoch, cfg)  # Dassl steps its scheduler per epoch
        for g in opt.param_groups:
            g["lr"] = lr
        sampler.set_epoch(loop.epoch, start=loop.pos * bs)
        model.train()
        for batch in loop.epoch_batches(loader):
            images = batch["image"].to(device, non_blocking=True)
            labels = torch.as_tensor(batch["label"], device=device)
            with autocast(device, amp):
                logits = model(images)  # the towers under autocast, the logits in fp32
            loss = loss_fn(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            true = torch.as_tensor(batch["true_label"], device=device)
            loop.end_step(loss, {"train/lr": lr,
                                 "train/acc_vs_true_labels": 100 * (logits.argmax(-1) == true).float().mean(),
                                 "train/acc_vs_given_labels": 100 * (logits.argmax(-1) == labels).float().mean()})
            loop.checkpoint_if_due()
    loop.finish()

    with loop.paused():
        test_loader = eval_loader(ds.test, test_transform(bundle.image_size), cfg, device=device)
        logits, labels = predict(model, test_loader, device, amp, desc=f"test {ds.name}")
    results["test"] = classification_metrics(logits, labels, ds.num_classes)
    loop.log({f"test/{k}": v for k, v in results["test"].items() if k != "n"})
    results["train_steps"] = loop.step
    results["train_time_s"] = loop.clock.read()
    results["loss"] = {"name": cfg.loss.name, "q": cfg.loss.q}
    return _finish(ctx, results, logits, labels)


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.ptnl.train")

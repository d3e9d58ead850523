"""Full fine-tuning of a Latent MIM encoder as a timm ViT (MAE's recipe: layer-wise lr decay 0.65,
AdamW, mixup 0.8 / cutmix 1.0, label smoothing 0.1, RandAugment m9, random erasing 0.25, drop path
0.1, mean-pooled patch tokens with fc_norm, 100 epochs with 5 of warm-up, cosine to 1e-6).

    python -m projects.latent_mim.finetune --config projects/latent_mim/configs/finetune_base.yaml \
        model.checkpoint=<our checkpoint or the official release> data.root=$IMAGENET

The encoder's weights reach timm through ``convert.py`` (patch embedding reshaped from the
(row, col, channel) Linear, the official position table copied).
"""
from __future__ import annotations

import logging
import math
import sys

import torch
from torch.utils.data import DataLoader

from shared import dist, launch
from shared.amp import autocast
from shared.data.robust import collate_skipping_bad
from shared.data.sampling import ResumableSampler
from shared.loop import Loop
from shared.run import start_run
from projects.latent_mim import data as data_lib
from projects.latent_mim.convert import load_encoder_state, to_timm
from projects.latent_mim.encoder import SIZES

log = logging.getLogger(__name__)


def build_classifier(cfg, num_classes: int):
    from timm.models.vision_transformer import VisionTransformer

    m = cfg.model
    size = dict(dim=m.dim, depth=m.depth, heads=m.heads, patch_size=m.patch_size) if m.arch == "custom" else SIZES[m.arch]
    vit = VisionTransformer(img_size=m.grid_size * size["patch_size"], patch_size=size["patch_size"], in_chans=m.in_chans,
                            num_classes=num_classes, embed_dim=size["dim"], depth=size["depth"], num_heads=size["heads"],
                            qkv_bias=True, global_pool=m.global_pool, fc_norm=m.global_pool == "avg",
                            drop_path_rate=m.drop_path)
    if m.checkpoint:
        state = to_timm(load_encoder_state(m.checkpoint, m.source), m.in_chans)
        if m.global_pool == "avg":  # MAE: the pooled features get a fresh fc_norm; the trunk's final norm is unused
            state = {k: v for k, v in state.items() if not k.startswith("norm.")}
        missing, unexpected = vit.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith(("head.", "fc_norm.", "norm."))]
        if bad or unexpected:
            raise KeyError(f"{m.checkpoint}: does not fit the ViT: missing {bad}, unexpected {unexpected}")
        vit.pos_embed.requires_grad_(False)  # the fixed sin-cos table stays fixed
    torch.nn.init.trunc_normal_(vit.head.weight, std=2e-5)  # MAE's head init
    return vit


def train_transform(cfg):
    from timm.data import create_transform

    mean, std = data_lib._stats(cfg)
    a = cfg.aug
    return create_transform(data_lib.eval_size(cfg), is_training=True, scale=(cfg.data.min_crop, 1.0),
                            auto_augment=a.rand_augment or None, interpolation="bicubic", re_prob=a.reprob,
                            re_mode="pixel", re_count=1, mean=mean, std=std)


def lr_at(ep: float, peak: float, o) -> float:
    if ep < o.warmup_epochs:
        return peak * ep / o.warmup_epochs
    return o.min_lr + (peak - o.min_lr) * 0.5 * (1 + math.cos(math.pi * (ep - o.warmup_epochs) / (o.epochs - o.warmup_epochs)))


@torch.no_grad()
def accuracy(model, ds, cfg, device) -> float:
    model.eval()
    correct = total = 0
    for batch in DataLoader(ds, batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers,
                            collate_fn=collate_skipping_bad):
        if "views" not in batch:
            continue
        with autocast(device, cfg.train.amp):
            logits = model(batch["views"].to(device))
        correct += int((logits.float().argmax(1).cpu() == batch["label"]).sum())
        total += len(batch["label"])
    model.train()
    return correct / max(1, total)


def main(cfg) -> dict:
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import param_groups_layer_decay

    ctx = start_run(cfg)
    device, world = ctx.device, dist.world_size()
    o, a = cfg.optim, cfg.aug
    nc = data_lib.num_classes(cfg)
    model = build_classifier(cfg, nc).to(device)
    groups = param_groups_layer_decay(model, o.weight_decay, no_weight_decay_list=model.no_weight_decay(),
                                      layer_decay=o.layer_decay)
    opt = torch.optim.AdamW(groups, lr=0.0)
    peak = o.blr * o.batch_size * o.accum_iter * world / 256
    ds = data_lib.dataset(cfg, "train", train_aug=False, size=cfg.data.train_subset)
    ds.transform = train_transform(cfg)
    val = data_lib.dataset(cfg, "val", train_aug=False)
    per_step = o.batch_size * o.accum_iter
    sampler = ResumableSampler(len(ds), seed=cfg.run.seed, shuffle=True, drop_last=True)
    spe = len(sampler) // per_step
    if spe == 0:
        raise ValueError(f"{len(ds)} images are fewer than one step of {per_step}")
    loader = DataLoader(ds, batch_size=per_step, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=collate_skipping_bad, drop_last=True)
    mixup = Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, label_smoothing=a.smoothing, num_classes=nc) \
        if (a.mixup > 0 or a.cutmix > 0) else None
    criterion = SoftTargetCrossEntropy() if mixup else torch.nn.CrossEntropyLoss(label_smoothing=a.smoothing)
    loop = Loop(ctx, spe, epochs=o.epochs, max_steps=cfg.train.max_steps, samples_per_step=per_step * world)
    loop.register(model=model, optimizer=opt)
    loop.resume()
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    while not loop.done:
        sampler.set_epoch(loop.epoch, start=loop.pos * per_step)
        for batch in loop.epoch_batches(loader):
            lr = lr_at(loop.step / spe, peak, o)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            x, y = batch["views"].to(device), batch["label"].to(device)
            if mixup is not None:
                x, y = mixup(x, y)
            total = 0.0
            for xc, yc in zip(x.chunk(o.accum_iter), y.chunk(o.accum_iter)):
                with autocast(device, cfg.train.amp):
                    out = net(xc)
                loss = criterion(out.float(), yc) / o.accum_iter
                loss.backward()
                total = total + loss.detach()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loop.end_step(total, {"train/lr": lr})
            loop.checkpoint_if_due()
    loop.finish()
    res = {"config": cfg.run.name, "steps": loop.step, "checkpoint": cfg.model.checkpoint}
    if dist.is_main():
        res["finetune_top1"] = accuracy(model, val, cfg, device)
        res["paper"] = dict(cfg.paper) if cfg.paper else None
        loop.log({"eval/finetune_top1": res["finetune_top1"]})
        ctx.write_results(res, "results_finetune.json")
    ctx.close()
    return res


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.latent_mim.finetune")

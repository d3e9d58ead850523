"""The Patch Ranking pipeline, one run folder, phases in order (each resumes or is skipped when done):

    rank       Phase I: golden rankings of a train subset (predictor targets) and of a test subset
               (the oracle row, the predictor's overlap metric) -> <run>/rankings/<dataset>_<split>.json
    predictor  Phase II: the Mixer predictor on cached pooled features, KL to the soft target
               (Adam 1e-3, wd 1e-4, cosine to 1e-4 over 50 epochs, batch 64) -> <run>/predictor.pt
    prompts    Phase III: IVLP visual + text tokens, few-shot (16 shots), the pruned model in the loop
               (SGD 0.0035, batch 4, 5 epochs, 1 constant warm-up epoch at 1e-5, cosine) -> <run>/prompts.pt
    eval       zero-shot top-1 at each keep ratio for every method, GFLOPs, images/s -> results.json

    python -m projects.patch_ranking.train --config projects/patch_ranking/configs/oxford_pets.yaml data.root=$DATA
    python -m projects.patch_ranking.train --config ... phases=[rank]      # only the golden rankings
    python -m projects.patch_ranking.train --config ... --cluster slurm --partition gpu --gpus-per-node 1

The trained phases run on ``shared.loop.Loop`` (sub-folders ``predictor/`` and ``prompts/`` of the run
hold their checkpoints; a killed run resumes mid-epoch). One ETA runs across the phases: each is a share
of a ``shared.logging.Progress`` weighted by its estimated cost (``phase_work``).
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from shared import dist, launch
from shared.amp import autocast
from shared.checkpoint import CheckpointManager, atomic_torch_save, atomic_write_text
from shared.clip.datasets import ImageListDataset
from shared.data.sampling import ResumableSampler
from shared.logging import Progress, ProgressPart, progress, progress_line, stderr_is_tty
from shared.loop import Loop
from shared.run import RunContext, start_run
from projects.patch_ranking.data import build_dataset, few_shot, loader, subset, test_transform, train_transform
from projects.patch_ranking.golden import GoldenConfig
from projects.patch_ranking.model import PrunedCLIP, build_model, load_predictor
from projects.patch_ranking.predictor import MixerPredictor, ranking_kl_loss, top_overlap
from projects.patch_ranking.pruning import depth, embed, grid_size, run_blocks
from projects.patch_ranking.rankings import Rankings, image_id, load_rankings, new_rankings, rank_items

# the hint for a run's own predictor.pt that does not load
REBUILD_PREDICTOR = ("it is this run's predictor: delete predictor.pt and predictor.json from the run folder and run "
                     "the same command again (phases=[predictor,eval]) to train it anew")

log = logging.getLogger(__name__)
PHASES = ("rank", "predictor", "prompts", "eval")


def golden_config(cfg, model: PrunedCLIP) -> GoldenConfig:
    g = cfg.golden
    return GoldenConfig(layer=model.layer, block_size=int(g.block_size), tokens_per_step=int(g.tokens_per_step),
                        steps=int(g.steps), score=str(g.score), max_batch=int(g.max_batch))


def sub_context(ctx: RunContext, name: str) -> RunContext:
    d = ctx.run_dir / name
    return RunContext(cfg=ctx.cfg, run_dir=d, device=ctx.device,
                      ckpt=CheckpointManager(d, keep=int(ctx.cfg.run.get("keep_checkpoints", 2))))


def rankings_path(ctx: RunContext, ds, split: str):
    return ctx.run_dir / "rankings" / f"{ds.name}_{split}.json"


def phase_work(cfg, ds, model: PrunedCLIP, phases: list[str]) -> dict[str, float]:
    """Each phase's rough cost in image-block forwards, the weights of one ETA across the phases: the golden
    search scores every block at each step through the blocks after the pruning layer, an eval row is a pass
    over the test split, a prompt step runs the batch and every class prompt forward and back (x3)."""
    g, e, pc, seed = cfg.golden, cfg.eval, cfg.prompts, int(cfg.run.seed)
    d, layer, (gh, gw) = depth(model.clip.visual), model.layer, grid_size(model.clip.visual)
    blocks = math.ceil(gh / int(g.block_size)) * math.ceil(gw / int(g.block_size))
    ranked = len(subset(ds.train, int(g.train_images), seed)) + len(subset(ds.test, int(g.test_images), seed))
    shots = min(int(pc.shots) * ds.num_classes, len(ds.train))
    prompt_steps = int(pc.epochs) * math.ceil(shots / int(pc.batch_size))
    work = {"rank": ranked * (layer + int(g.steps) * blocks * (d - layer)),
            "predictor": ranked * (layer + int(cfg.predictor.epochs)),
            "eval": len(e.keep_ratios) * len(e.methods) * len(ds.test) * d,
            "prompts": 3 * d * prompt_steps * (int(pc.batch_size) + ds.num_classes),
            "eval_tokens": 2 * len(e.keep_ratios) * len(ds.test) * d}
    wanted = set(phases) | ({"eval_tokens"} if {"prompts", "eval"} <= set(phases) else set())
    return {p: float(w) for p, w in work.items() if p in wanted}


def log_progress(what: str, part: ProgressPart, rate: float, unit: str) -> None:
    """Off a terminal (a cluster job's log), a plain line where a phase without a loop makes progress."""
    if not stderr_is_tty():
        log.info("%s: %s", what, progress_line(unit, int(part.done), int(part.units), rate, unit, part.eta(),
                                                "elapsed", part.run.elapsed(), run_fraction=part.fraction))


# ---- Phase I -------------------------------------------------------------------------------------

def phase_rank(ctx: RunContext, cfg, ds, model: PrunedCLIP, work: Progress, cost: float) -> dict[str, Rankings]:
    gcfg = golden_config(cfg, model)
    out = {}
    splits = {split: subset(ds.split(split), int(n), int(cfg.run.seed))
              for split, n in (("train", cfg.golden.train_images), ("test", cfg.golden.test_images))}
    part = work.part(cost, sum(map(len, splits.values())))
    for split, items in splits.items():
        if not items:
            continue
        path = rankings_path(ctx, ds, split)
        r = load_rankings(path, ds.name, model.clip, split) if path.is_file() else \
            new_rankings(ds.name, split, model.clip, model.bundle_name, model.bundle_source, gcfg)
        if r.meta["golden"] != gcfg.to_dict():
            raise ValueError(f"{path} was made with golden settings {r.meta['golden']}, the config asks for "
                             f"{gcfg.to_dict()}; delete it or use another run name")
        part.skip(sum(image_id(d.impath, ds.root) in r.images for d in items))
        chunk = max(1, int(cfg.golden.batch_size)) * 20
        for i in range(0, len(items), chunk):  # saved every chunk: a restarted job continues
            before, t0 = len(r.images), time.perf_counter()
            rank_items(model.clip, items[i:i + chunk], ds.root, test_transform(model.image_size), gcfg, r,
                       classifier=model.classifier, batch_size=int(cfg.golden.batch_size),
                       num_workers=int(cfg.data.num_workers), device=ctx.device,
                       desc=f"golden {split} {i // chunk + 1}/{math.ceil(len(items) / chunk)}")
            if dist.is_main():
                r.save(path)
            if len(r.images) > before:
                part.advance(len(r.images) - before)
                rate = (len(r.images) - before) / max(time.perf_counter() - t0, 1e-9)
                log_progress(f"golden {split}", part, rate, "images")
        out[split] = r
    part.finish()
    return out


def ranked_items(ds, split: str, rankings: Rankings):
    ids = set(rankings.images)
    return [d for d in ds.split(split) if image_id(d.impath, ds.root) in ids]


# ---- Phase II ------------------------------------------------------------------------------------

@torch.no_grad()
def pooled_features(model: PrunedCLIP, items, cfg, device) -> torch.Tensor:
    """[M, 1+N, pool_dim] predictor inputs, channels pooled (the pooling has no parameters)."""
    out = []
    dl = loader(items, test_transform(model.image_size), int(cfg.eval.batch_size), cfg, device)
    for batch in progress(dl, desc="predictor features"):
        x = batch["image"].to(device)
        with autocast(device, cfg.train.amp):
            if model.timm_features is not None:
                tokens = model.timm_features(x)
            else:
                v = model.clip.visual
                tokens = run_blocks(v, embed(v, x), 0, model.layer)
        out.append(model.predictor.pool_features(tokens).float().cpu())
    return torch.cat(out)


class _Cached(Dataset):
    def __init__(self, feats: torch.Tensor, orders: torch.Tensor):
        self.feats, self.orders = feats, orders

    def __len__(self):
        return len(self.feats)

    def __getitem__(self, item):
        i = item[0] if isinstance(item, tuple) else item
        return self.feats[i], self.orders[i]


@torch.no_grad()
def overlap_on(predictor: MixerPredictor, feats: torch.Tensor, orders: torch.Tensor, n: int, device) -> float:
    predictor.eval()
    s = torch.cat([predictor.head(feats[i:i + 512].to(device)).cpu() for i in range(0, len(feats), 512)])
    return float(top_overlap(s, orders, n).mean())


def phase_predictor(ctx: RunContext, cfg, ds, model: PrunedCLIP, rankings: dict[str, Rankings], work: Progress,
                    cost: float) -> dict:
    p, device = cfg.predictor, ctx.device
    if "train" not in rankings:
        raise ValueError("the predictor needs golden rankings of train images (golden.train_images != 0)")
    items = ranked_items(ds, "train", rankings["train"])
    orders = rankings["train"].order([image_id(d.impath, ds.root) for d in items])
    feats = pooled_features(model, items, cfg, device)
    test = None
    if "test" in rankings:
        t_items = ranked_items(ds, "test", rankings["test"])
        test = (pooled_features(model, t_items, cfg, device),
                rankings["test"].order([image_id(d.impath, ds.root) for d in t_items]))
    sub = sub_context(ctx, "predictor")
    pred = model.predictor
    bs = int(p.batch_size)
    steps = math.ceil(len(feats) / bs)
    loop = Loop(sub, steps_per_epoch=steps, epochs=int(p.epochs), samples_per_step=bs, desc="predictor",
                work=work.part(cost, steps * int(p.epochs)))
    opt = torch.optim.Adam(pred.parameters(), lr=float(p.lr), weight_decay=float(p.weight_decay))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(p.epochs), eta_min=float(p.min_lr))
    loop.register(predictor=pred, optimizer=opt, scheduler=sched)
    loop.vars["overlap"] = []
    loop.resume()
    sampler = ResumableSampler(len(feats), seed=int(cfg.run.seed), shuffle=True)
    dl = DataLoader(_Cached(feats, orders), batch_size=bs, sampler=sampler)
    while not loop.done:
        sampler.set_epoch(loop.epoch, start=loop.pos * bs)
        pred.train()
        for f, o in loop.epoch_batches(dl):
            f, o = f.to(device), o.to(device)
            scores = pred.head(f)
            loss = ranking_kl_loss(scores, o, int(p.tail))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loop.end_step(loss, {"train/lr": opt.param_groups[0]["lr"]})
            if loop.pos == 0:
                sched.step()
                with loop.paused():
                    m = {"predictor/train_overlap": overlap_on(pred, feats, orders, int(p.overlap_n), device)}
                    if test is not None:
                        m["predictor/test_overlap"] = overlap_on(pred, *test, int(p.overlap_n), device)
                    loop.vars["overlap"].append({"epoch": loop.epoch, **m})
                    loop.log(m)
                pred.train()
            loop.checkpoint_if_due()
    loop.finish()
    pred.eval()
    summary = {"train_images": len(feats), "epochs": int(p.epochs),
               "train_overlap": overlap_on(pred, feats, orders, int(p.overlap_n), device),
               "overlap_n": int(p.overlap_n), "history": loop.vars["overlap"]}
    if test is not None:
        summary["test_overlap"] = overlap_on(pred, *test, int(p.overlap_n), device)
        summary["test_images"] = len(test[0])
    if dist.is_main():
        atomic_torch_save(pred.state_dict(), ctx.run_dir / "predictor.pt")
        atomic_write_text(ctx.run_dir / "predictor.json", json.dumps(summary, indent=2) + "\n")
    return summary


# ---- Phase III -----------------------------------------------------------------------------------

def prompt_lr(epoch: int, pc) -> float:
    """Dassl: constant warm-up epochs at warmup_lr, then cosine over ``epochs`` (stepped per epoch)."""
    if epoch < int(pc.warmup_epochs):
        return float(pc.warmup_lr)
    return 0.5 * float(pc.lr) * (1 + math.cos(math.pi * (epoch - int(pc.warmup_epochs)) / int(pc.epochs)))


def prompt_parameters(model: PrunedCLIP) -> list[nn.Parameter]:
    return list(model.visual_prompts.parameters()) + list(model.text_prompts.parameters())


def phase_prompts(ctx: RunContext, cfg, ds, model: PrunedCLIP, work: Progress, cost: float) -> dict:
    pc, device = cfg.prompts, ctx.device
    model.add_prompts(int(pc.n_vis), int(pc.n_txt), int(pc.depth_vis), int(pc.depth_txt), str(pc.ctx_init))
    model.set_method(pc.method)
    items = few_shot(ds.train, int(pc.shots), int(cfg.run.seed))
    bs = int(pc.batch_size)
    sub = sub_context(ctx, "prompts")
    params = prompt_parameters(model)
    opt = torch.optim.SGD(params, lr=float(pc.lr), momentum=float(pc.momentum), weight_decay=float(pc.weight_decay))
    steps = math.ceil(len(items) / bs)
    loop = Loop(sub, steps_per_epoch=steps, epochs=int(pc.epochs), samples_per_step=bs, desc="learnable tokens",
                work=work.part(cost, steps * int(pc.epochs)))
    loop.register(visual_prompts=model.visual_prompts, text_prompts=model.text_prompts, optimizer=opt)
    loop.resume()
    sampler = ResumableSampler(len(items), seed=int(cfg.run.seed), shuffle=True)
    dl = DataLoader(ImageListDataset(items, train_transform(cfg, model.image_size)), batch_size=bs, sampler=sampler,
                    num_workers=int(cfg.data.num_workers), pin_memory=device.type == "cuda")
    while not loop.done:
        lr = prompt_lr(loop.epoch, pc)
        for g in opt.param_groups:
            g["lr"] = lr
        sampler.set_epoch(loop.epoch, start=loop.pos * bs)
        model.train()
        for batch in loop.epoch_batches(dl):
            x = batch["image"].to(device, non_blocking=True)
            y = torch.as_tensor(batch["label"], device=device)
            with autocast(device, cfg.train.amp):
                logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loop.end_step(loss, {"train/lr": lr})
            loop.checkpoint_if_due()
    loop.finish()
    model.eval()
    state = {"visual_prompts": model.visual_prompts.state_dict(), "text_prompts": model.text_prompts.state_dict()}
    if dist.is_main():
        atomic_torch_save(state, ctx.run_dir / "prompts.pt")
    return {"shots": int(pc.shots), "train_images": len(items), "method": pc.method, "keep": model.stages,
            "epochs": int(pc.epochs), "train_time_s": loop.clock.read()}


# ---- the run -------------------------------------------------------------------------------------

def main(cfg) -> dict:
    from projects.patch_ranking.eval import evaluate

    phases = list(cfg.phases)
    bad = [p for p in phases if p not in PHASES]
    if bad:
        raise ValueError(f"unknown phases {bad}; valid: {PHASES}")
    ctx = start_run(cfg)
    device = ctx.device
    if device.type == "cpu" and cfg.train.cpu_threads:
        torch.set_num_threads(int(cfg.train.cpu_threads))
    if dist.world_size() > 1:
        raise ValueError("Patch Ranking runs on one process (the trained parts are tiny); rank large datasets "
                         "with several runs over golden.train_images subsets instead")
    ds = build_dataset(cfg)
    model = build_model(cfg, ds.classnames, device)
    results = {"config": cfg.run.name, "dataset": ds.name, "arch": model.bundle_name, "weights": model.bundle_source,
               "stages": model.stages, "num_patches": model.n, "classes": ds.num_classes,
               "paper": cfg.paper.to_dict() if hasattr(cfg.paper, "to_dict") else dict(cfg.paper)}
    costs = phase_work(cfg, ds, model, phases)
    work = Progress(max(sum(costs.values()), 1.0))  # wall clock: evaluation is part of the pipeline's time
    work.start()
    rankings = {}
    if "rank" in phases:
        rankings = phase_rank(ctx, cfg, ds, model, work, costs["rank"])
        results["golden"] = {**golden_config(cfg, model).to_dict(),
                             **{f"{s}_images": len(r.images) for s, r in rankings.items()}}
    else:
        for split in ("train", "test"):
            path = rankings_path(ctx, ds, split)
            if path.is_file():
                rankings[split] = load_rankings(path, ds.name, model.clip, split)
    if "predictor" in phases:
        done = ctx.run_dir / "predictor.json"
        if done.is_file() and (ctx.run_dir / "predictor.pt").is_file():
            load_predictor(model.predictor, ctx.run_dir / "predictor.pt", REBUILD_PREDICTOR)
            results["predictor"] = json.loads(done.read_text())
            work.skip(costs["predictor"])
        else:
            results["predictor"] = phase_predictor(ctx, cfg, ds, model, rankings, work, costs["predictor"])
    elif (ctx.run_dir / "predictor.pt").is_file() and not cfg.predictor.checkpoint:
        load_predictor(model.predictor, ctx.run_dir / "predictor.pt", REBUILD_PREDICTOR)
    if "eval" in phases:
        results["eval"] = evaluate(model, ds, cfg, device, rankings.get("test"), prompts=False)
        work.advance(costs["eval"])
    if "prompts" in phases:
        results["prompts"] = phase_prompts(ctx, cfg, ds, model, work, costs["prompts"])
        if "eval" in phases:
            results["eval"] += evaluate(model, ds, cfg, device, None, prompts=True)
    ctx.write_results(results)
    ctx.close()
    return results


if __name__ == "__main__":
    launch.main(sys.argv[1:], entry="projects.patch_ranking.train")

"""OneAVM evaluation: one trained model, no task-specific fine-tuning.

- localization (``task: localization``): the map <v_i(p), a_i> upsampled bilinearly to 224, scored
  with the shared EZ-VSL protocol (median binarisation, cIoU, AP50 = the tables' "cIoU", AUC) against
  the set's ground truth: box union (VGG-SS, MUSIC solo, MUSIC duet: both sources' boxes) or the
  segmentation mask (VGG-Instruments); a centre prior (a centred Gaussian) is scored beside it;
- separation (``task: separation``): each fixed pair's waveforms mixed, each source's mask predicted
  from its own frame, inverse STFT with the mixture's phase, mir_eval BSS-Eval (shared wrapper: no
  permutation, silent references skipped, per source then per mixture), the mixture's SDR beside it;
- recognition (``task: recognition``): leave-one-out 1-NN class accuracy (CR-ACC) of the audio and
  of the visual embeddings (cosine), and cross-modal instance retrieval (IR-ACC: the clip's own frame
  is the top-scoring one for its audio, max-over-locations score; and the reverse), with chance levels.

    python -m projects.oneavm.eval --config projects/oneavm/configs/demo.yaml [eval.checkpoint=init]
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from shared.amp import autocast, fp32_metrics
from shared.checkpoint import CheckpointManager, load_weights
from shared.config import load_config
from shared.data.audio import write_wav
from shared.data.robust import BadSampleMonitor, collate_skipping_bad
from shared.data.separation import SeparationFrontEnd, log_magnitude_image
from shared.metrics.localization import ciou, minmax, summarize, upsample_maps
from shared.metrics.separation import SeparationMeter
from shared.run import run_dir_of
from projects.oneavm.data import IMAGENET_MEAN, IMAGENET_STD, eval_set, separation_set
from projects.oneavm.frontend import encoder_spectrogram, front_end
from projects.oneavm.losses import av_maps, av_scores
from projects.oneavm.model import build_model

log = logging.getLogger(__name__)
TASKS = ("localization", "separation", "recognition")


def load_for_eval(cfg, model) -> str:
    """eval.checkpoint: 'last' (this run's latest checkpoint), 'init' (untrained), or a path."""
    which = cfg.eval.checkpoint
    if which == "init":
        return "init"
    if which == "last":
        path = CheckpointManager(run_dir_of(cfg)).latest_path()
        if path is None:
            raise FileNotFoundError(f"no checkpoint in {run_dir_of(cfg) / 'checkpoints'}; train first")
    else:
        path = which
    model.load_state_dict(load_weights(path, key="model", project="oneavm"))
    return str(path)


def _loader(ds, cfg) -> DataLoader:
    return DataLoader(ds, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=cfg.data.num_workers,
                      collate_fn=collate_skipping_bad)


def _batches(loader, cfg, name: str):
    mon = BadSampleMonitor(cfg.data.max_bad_fraction, name, epoch_size=len(loader.dataset))
    for batch in loader:
        mon.update(len(batch.get("index", [])), batch["bad"])
        if "index" in batch:
            yield batch
    return mon


@torch.no_grad()
def embed(model, ds, cfg, device, fe: SeparationFrontEnd) -> dict:
    """Per-clip image maps, audio embeddings, labels and (when annotated) gt maps, on the CPU."""
    model.eval()
    out = {"img": [], "aud": [], "label": [], "index": [], "gt": []}
    for batch in _batches(_loader(ds, cfg), cfg, "eval"):
        image = batch["image"].to(device)
        spec = encoder_spectrogram(fe, batch["wave"].to(device), cfg.data.audio.encoder_scale)
        with autocast(device, cfg.train.amp):
            img, aud = model.encode_image(image), model.encode_audio(spec)
        out["img"].append(img.float().cpu())
        out["aud"].append(aud.float().cpu())
        out["label"].append(torch.as_tensor(batch["label"]))
        out["index"].append(torch.as_tensor(batch["index"]))
        if "gt_map" in batch:
            out["gt"].append(batch["gt_map"])
    if not out["img"]:
        raise RuntimeError("no evaluation clip could be read")
    return {k: torch.cat(v) if v else None for k, v in out.items()}


def center_prior(size: int, sigma: float = 0.25) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    return np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))


def peak_cells(maps: torch.Tensor, gts: torch.Tensor) -> dict:
    """Where the (N, h, w) feature-resolution maps peak: the fraction of peaks on a border cell, the
    fraction of ground truths whose centre of mass lies in a border cell, and the fraction of peaks in
    the cell holding the ground truth's centre of mass ((N, H, W) maps at any resolution). A diagnostic
    of the border shortcut: a border cell sees the whole frame and can signal the class without
    localizing it."""
    n, h, w = maps.shape
    idx = maps.flatten(1).argmax(1)
    r, c = idx // w, idx % w
    g = gts.float()
    mass = g.sum((1, 2)).clamp_min(1e-12)
    gy = (g.sum(2) * torch.arange(g.shape[1])).sum(1) / mass
    gx = (g.sum(1) * torch.arange(g.shape[2])).sum(1) / mass
    gr = (gy / g.shape[1] * h).long().clamp(0, h - 1)
    gc = (gx / g.shape[2] * w).long().clamp(0, w - 1)

    def border(a, b):
        return (a == 0) | (a == h - 1) | (b == 0) | (b == w - 1)

    return {"peak_on_border": float(border(r, c).float().mean()),
            "target_on_border": float(border(gr, gc).float().mean()),
            "peak_in_target_cell": float(((r == gr) & (c == gc)).float().mean())}


def localization(model, ds, cfg, device, fe, viz_path: Path | None = None) -> dict:
    e = embed(model, ds, cfg, device, fe)
    if e["gt"] is None:
        raise ValueError("localization needs a set with annotations (eval.sets.<name>.annotations)")
    with fp32_metrics():
        raw = av_maps(e["img"], e["aud"])
        maps = upsample_maps(raw, cfg.eval.gt_size)
    gts = e["gt"].numpy()
    prior = center_prior(cfg.eval.gt_size)
    model_cious = [ciou(minmax(m), g) for m, g in zip(maps, gts)]
    prior_cious = [ciou(prior, g) for g in gts]
    if viz_path is not None and cfg.eval.n_visualizations:
        save_heatmaps(ds, e["index"], maps, gts, viz_path, cfg.eval.n_visualizations)
    return {"model": summarize(model_cious), "center_prior": summarize(prior_cious), "n": len(model_cious),
            "peaks": peak_cells(raw, e["gt"])}


def recognition(model, ds, cfg, device, fe) -> dict:
    e = embed(model, ds, cfg, device, fe)
    labels = e["label"]
    if (labels < 0).any():
        raise ValueError("recognition needs a class for every clip (an 'id,class' list)")
    vis = F.normalize(e["img"].flatten(2).mean(-1), dim=1)  # the frame's embedding: mean of its local features
    aud = e["aud"]
    n = len(labels)
    if n < 2:
        raise ValueError("leave-one-out recognition needs at least 2 clips")

    def loo_1nn(x):
        sim = x @ x.t()
        sim.fill_diagonal_(-float("inf"))  # the query itself is never its own neighbour
        return float((labels[sim.argmax(1)] == labels).float().mean())

    s = av_scores(e["img"], aud, 1.0)  # image i x audio j
    target = torch.arange(n)
    counts = torch.bincount(labels)
    return {"cr_acc_audio": loo_1nn(aud), "cr_acc_visual": loo_1nn(vis),
            "ir_acc_audio_to_image": float((s.argmax(0) == target).float().mean()),
            "ir_acc_image_to_audio": float((s.argmax(1) == target).float().mean()),
            "chance_cr": float((counts * (counts - 1)).sum() / (n * (n - 1))),  # a random other clip's class matches
            "chance_ir": 1.0 / n, "n": n}


@torch.no_grad()
def separation(model, pairs, cfg, device, fe, viz_dir: Path | None = None) -> dict:
    model.eval()
    meter, by_type = SeparationMeter(), {}
    saved = 0
    for batch in _batches(_loader(pairs, cfg), cfg, "separation"):
        image = batch["image"].to(device)  # (B, N, 3, H, W)
        wave = batch["wave"].to(device)    # (B, N, L)
        b, n = wave.shape[:2]
        t = fe.targets(wave.transpose(0, 1), cfg.sep.mask, cfg.sep.weighted)
        with autocast(device, cfg.train.amp):
            sound = model.sound_features(t["log_mag_mix"])
            vis = model.separation_visual(model.image_trunk(image.flatten(0, 1))).view(b, n, -1)
            logits = torch.stack([model.mask_logits(vis[:, k], sound) for k in range(n)])
        with fp32_metrics():
            masks = torch.sigmoid(logits.float())
            est = fe.reconstruct(t["spec_mix"], masks, cfg.sep.mask, cfg.sep.threshold, length=wave.shape[-1])
        refs, ests, mix = t["sources"].cpu().numpy(), est.cpu().numpy(), t["mix"].cpu().numpy()
        for j in range(b):
            key = batch["key"][j]
            s = meter.update(refs[:, j], ests[:, j], mix[j], key=key)
            typ = batch["sep_type"][j]
            if s is not None and typ:
                by_type.setdefault(typ, SeparationMeter()).update(refs[:, j], ests[:, j], mix[j], key=key)
            if viz_dir is not None and saved < cfg.eval.n_visualizations:
                save_separation(viz_dir / key, fe, t, masks, refs[:, j], ests[:, j], mix[j], j, cfg.data.audio.sample_rate)
                saved += 1
    out = meter.summary()
    for typ, m in sorted(by_type.items()):
        out[typ] = m.summary()
    if meter.skipped:
        log.warning("separation: %d mixtures with a silent source skipped (e.g. %s)", len(meter.skipped),
                    meter.skipped[:3])
    return out


def save_separation(folder: Path, fe, t, masks, refs, ests, mix, j: int, sr: int) -> None:
    """mix.wav, gt<n>.wav, pred<n>.wav and mix.png / pred<n>.png / gt<n>.png log-magnitude images."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    write_wav(folder / "mix.wav", mix, sr)
    Image.fromarray(log_magnitude_image(t["mag_mix"][j])).save(folder / "mix.png")
    for k in range(refs.shape[0]):
        write_wav(folder / f"gt{k + 1}.wav", refs[k], sr)
        write_wav(folder / f"pred{k + 1}.wav", np.clip(ests[k], -1, 1), sr)
        Image.fromarray(log_magnitude_image(t["mag_mix"][j] * masks[k, j].float().cpu())).save(folder / f"pred{k + 1}.png")
        Image.fromarray(log_magnitude_image(t["mag_mix"][j] * t["gt_masks"][k, j].cpu())).save(folder / f"gt{k + 1}.png")


def save_heatmaps(ds, indices, maps, gts, path: Path, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(indices))
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.4), squeeze=False)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    for ax, i in zip(axes[0], range(n)):
        item = ds[int(indices[i])]
        img = (item["image"] * std + mean).clamp(0, 1)
        img = F.interpolate(img[None], size=maps.shape[-2:], mode="bilinear", align_corners=False)[0]
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.imshow(minmax(maps[i]), cmap="jet", alpha=0.45)
        ax.contour(gts[i], levels=[0.5], colors="white", linewidths=1)
        ax.set_title(f"cIoU {ciou(minmax(maps[i]), gts[i]):.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_all(cfg, model, device, run_dir: Path, classes: list[str] | None = None, tag: str = "") -> dict:
    """Every set in eval.tasks, by its task; figures and audio under <run>/viz<tag>/."""
    fe = front_end(cfg)
    viz = Path(run_dir) / f"viz{tag}"
    out = {}
    for name in cfg.eval.tasks:
        s = cfg.eval.sets[name]
        task = s.get("task")
        if task not in TASKS:
            raise ValueError(f"eval.sets.{name}.task must be one of {TASKS}, got {task!r}")
        if task == "localization":
            out[name] = localization(model, eval_set(cfg, name, classes), cfg, device, fe, viz / f"{name}_heatmaps.png")
        elif task == "recognition":
            out[name] = recognition(model, eval_set(cfg, name, classes), cfg, device, fe)
        else:
            out[name] = separation(model, separation_set(cfg, name), cfg, device, fe, viz / name)
        log.info("%s (%s): %s", name, task, json.dumps(out[name]))
    return out


def main(argv=None) -> dict:
    from shared import dist

    p = argparse.ArgumentParser(description="Evaluate a OneAVM run (eval.tasks) without fine-tuning")
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    device = dist.init(cfg.run.get("device", "auto")).device
    model = build_model(cfg, device)
    source = load_for_eval(cfg, model)
    tag = "" if cfg.eval.checkpoint == "last" else f"_{Path(str(cfg.eval.checkpoint)).stem}"
    res = evaluate_all(cfg, model, device, run_dir_of(cfg), tag=tag)
    res["checkpoint"] = source
    path = run_dir_of(cfg) / f"eval{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()

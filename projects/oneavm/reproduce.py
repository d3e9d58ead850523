"""The whole OneAVM pipeline and its results table.

    python -m projects.oneavm.reproduce                     # demo: tuxpaint data, full model + 3 ablations, table
    python -m projects.oneavm.reproduce --config projects/oneavm/configs/<exp>.yaml data.root=$DATA_ROOT
    python -m projects.oneavm.reproduce --no-ablations      # the full model only
    python -m projects.oneavm.reproduce --jobs 4            # the four trainings as parallel processes

Beside each trained model it scores the same network untrained (its initialisation) and a centre
prior on the localization sets, the mixture's own SDR on the separation set, and the chance levels
of recognition and retrieval; with ablations (the config's ``_no_loc``, ``_no_sep``, ``_no_mix``
siblings, or the overrides loss.w_*=0) each objective is removed in turn. One markdown table.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from shared import dist
from shared.config import load_config
from shared.run import run_dir_of

log = logging.getLogger(__name__)
DEMO_CONFIG = "projects/oneavm/configs/demo.yaml"
ABLATIONS = {"no_loc": "loss.w_loc=0.0", "no_sep": "loss.w_sep=0.0", "no_mix": "loss.w_mix=0.0"}


def prepare_demo(cfg, n_train: int, n_test: int, distractors: str = "silent", n_distractors: int = 32,
                 object_frac: tuple[float, float] = (0.5, 0.7), placement: str = "cells") -> None:
    """The tuxpaint set and the stand-in ImageNet classifier; both are remade when their settings change."""
    from shared.data.tuxpaint import make_tuxpaint_av

    make_tuxpaint_av(cfg.data.root, n_train=n_train, n_test=n_test, n_duet=max(8, n_test // 2),
                     n_pairs=n_test, size=max(224, cfg.data.image_size),  # one set for the 112 and 224 px configs
                     duration=cfg.data.audio.n_samples / cfg.data.audio.sample_rate + 0.05, seed=cfg.run.seed,
                     distractors=distractors, n_distractors=n_distractors, object_frac=tuple(object_frac),
                     placement=placement)
    weights = cfg.model.image_weights
    if weights and weights != "torchvision":
        # the demo's stand-in for ImageNet: a classifier of the sounding objects' pictures (pretrain_demo.py)
        from projects.oneavm.pretrain_demo import pretrain

        info = pretrain(Path(weights).parent, weights, image_size=cfg.data.image_size, seed=cfg.run.seed)
        print(f"demo image encoder: object-class accuracy {100 * info['val_accuracy']:.1f}% "
              f"({len(info['classes'])} classes) -> {weights}")


def untrained(cfg) -> dict:
    from projects.oneavm.eval import evaluate_all
    from projects.oneavm.data import train_set
    from projects.oneavm.model import build_model

    device = dist.init(cfg.run.device).device
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg, device)
    return evaluate_all(cfg, model, device, run_dir_of(cfg), classes=train_set(cfg).classes, tag="_init")


def train_parallel(config: str, runs: dict, jobs: int) -> dict:
    """Each run as its own `python -m projects.oneavm.train` process, at most ``jobs`` at once; their
    results.json files are read back (a failed run is an error naming its log)."""
    import os
    import subprocess
    import sys
    import time

    pending, active, out = list(runs.items()), {}, {}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    while pending or active:
        while pending and len(active) < jobs:
            tag, over = pending.pop(0)
            cfg = load_config(config, over)
            run_dir = run_dir_of(cfg)
            run_dir.mkdir(parents=True, exist_ok=True)
            logf = open(run_dir / "reproduce.log", "w")
            proc = subprocess.Popen([sys.executable, "-m", "projects.oneavm.train", "--config", config, *over],
                                    stdout=logf, stderr=subprocess.STDOUT, env=env)
            active[tag] = (proc, run_dir, logf)
        for tag, (proc, run_dir, logf) in list(active.items()):
            if proc.poll() is None:
                continue
            logf.close()
            del active[tag]
            if proc.returncode != 0:
                raise RuntimeError(f"the {tag} run failed (exit {proc.returncode}); see {run_dir / 'reproduce.log'}")
            out[tag] = json.loads((run_dir / "results.json").read_text())
        time.sleep(2)
    return out


def row(label: str, r: dict, cfg, prior: bool = False) -> str:
    cells = [label]
    for name in cfg.eval.tasks:
        task, m = cfg.eval.sets[name].task, r[name]
        if task == "localization":
            s = m["center_prior" if prior else "model"]
            cells += [f"{100 * s['ciou_ap50']:.1f}", f"{100 * s['auc']:.1f}", f"{100 * s['mean_ciou']:.1f}"]
        elif task == "separation":
            cells += ["-", "-", "-", f"{m['sdr_mix']:.2f}"] if prior else \
                [f"{m['sdr']:.2f}", f"{m['sir']:.2f}", f"{m['sar']:.2f}", f"{m['sdr_mix']:.2f}"]
        else:
            cells += ([f"{100 * m['chance_cr']:.1f}", f"{100 * m['chance_cr']:.1f}", f"{100 * m['chance_ir']:.1f}"]
                      if prior else [f"{100 * m['cr_acc_audio']:.1f}", f"{100 * m['cr_acc_visual']:.1f}",
                                     f"{100 * m['ir_acc_audio_to_image']:.1f}"])
    return "| " + " | ".join(cells) + " |"


def table(cfg, rows: list[tuple[str, dict]]) -> str:
    head = ["model"]
    for name in cfg.eval.tasks:
        task = cfg.eval.sets[name].task
        head += {"localization": [f"{name} AP50", "AUC", "mean cIoU"],
                 "separation": [f"{name} SDR", "SIR", "SAR", "mixture SDR"],
                 "recognition": [f"{name} CR-ACC audio", "CR-ACC visual", "IR-ACC a->v"]}[task]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in rows:
        lines.append(row(label, r, cfg))
    lines.append(row("centre prior / mixture / chance", rows[0][1], cfg, prior=True))
    return "\n".join(lines)


LABELS = {"untrained": "untrained (init)", "full": "OneAVM (all three objectives)",
          "no_loc": "without localized correspondence", "no_sep": "without mix-and-separate",
          "no_mix": "without image mixing"}


def result_rows(cfg, results: dict) -> dict[str, list[dict]]:
    """Rows for shared.report, one list per task (localization, separation, recognition): every model on
    every set, and the references (centre prior, the unseparated mixture, chance) as their own methods."""
    tables: dict[str, list[dict]] = {}

    first = next(r for r in results.values() if r)
    for name in cfg.eval.tasks:
        task = cfg.eval.sets[name].task
        rows = tables.setdefault(task, [])

        def add(setting, method, metric, value, scale=100.0, rows=rows):
            rows.append({"setting": setting, "method": method, "metric": metric, "ours": round(scale * value, 2)})
        setting = f"{name} (n={first[name]['n'] if 'n' in first[name] else first[name].get('n_mixtures')})"
        for tag, r in results.items():
            if not r:
                continue
            m = r[name]
            if task == "localization":
                for k, label in (("ciou_ap50", "cIoU AP50"), ("auc", "AUC"), ("mean_ciou", "mean cIoU")):
                    add(setting, LABELS[tag], label, m["model"][k])
            elif task == "separation":
                for k in ("sdr", "sir", "sar"):
                    add(setting, LABELS[tag], f"{k.upper()} (dB)", m[k], 1.0)
            else:
                for k, label in (("cr_acc_audio", "CR-ACC audio"), ("cr_acc_visual", "CR-ACC visual"),
                                 ("ir_acc_audio_to_image", "IR-ACC a->v")):
                    add(setting, LABELS[tag], label, m[k])
        m = first[name]
        if task == "localization":
            for k, label in (("ciou_ap50", "cIoU AP50"), ("auc", "AUC"), ("mean_ciou", "mean cIoU")):
                add(setting, "centre prior", label, m["center_prior"][k])
        elif task == "separation":
            add(setting, "mixture, unseparated", "SDR (dB)", m["sdr_mix"], 1.0)
        else:
            add(setting, "chance", "CR-ACC audio", m["chance_cr"])
            add(setting, "chance", "CR-ACC visual", m["chance_cr"])
            add(setting, "chance", "IR-ACC a->v", m["chance_ir"])
    return tables


def figures(cfg, runs: dict, out_dir: Path, stem: str = "demo") -> list[dict]:
    """The training losses of every run, the full model's heatmaps (boxes, duets) and separated
    spectrograms, as small files in the project's figures folder, named after the config (``stem``)."""
    from PIL import Image

    from shared.report import plot_curves

    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    full = runs["full"]
    variant = stem.removeprefix("demo")  # "" for demo.yaml, "_224" for demo_224.yaml
    for key in ("loss/loc", "loss/sep", "loss/mix"):
        have = {LABELS[t]: d for t, d in runs.items() if any(key in r for r in _metrics(d))}
        if have:
            path = out_dir / f"{stem}_{key.split('/')[1]}_loss.png"
            plot_curves(have, key, out=path, xlabel="step", ylabel=key, title=f"OneAVM demo: {key} during training")
            out.append({"path": str(path), "caption": f"{key} per step",
                        "kind": "separation" if key == "loss/sep" else "localization"})
    for name in cfg.eval.tasks:
        src = full / "viz" / f"{name}_heatmaps.png"
        if src.is_file():
            dst = out_dir / f"{name}{variant}_heatmaps.jpg"
            Image.open(src).convert("RGB").save(dst, quality=85)
            out.append({"path": str(dst), "caption": f"{name}: test frames, the sounding object's outline, "
                                                     "the trained model's map", "kind": "localization"})
    for name in cfg.eval.tasks:
        if cfg.eval.sets[name].task == "separation":
            grid = separation_grid(full / "viz" / name, n=3)
            if grid is not None:
                dst = out_dir / f"{name}{variant}_spectrograms.png"
                grid.save(dst)
                out.append({"path": str(dst), "caption": "per row: mixture | source 1 ideal, predicted | "
                                                         "source 2 ideal, predicted (log magnitude)",
                            "kind": "separation"})
    return out


def _metrics(run_dir: Path) -> list[dict]:
    from shared.logging import read_metrics

    return read_metrics(run_dir)


def separation_grid(folder: Path, n: int = 3):
    """mix | gt1 | pred1 | gt2 | pred2 spectrogram images of the first ``n`` saved pairs, one row each."""
    from PIL import Image

    pairs = sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    rows = []
    for d in pairs[:n]:
        names = ["mix", "gt1", "pred1", "gt2", "pred2"]
        if all((d / f"{k}.png").is_file() for k in names):
            ims = [Image.open(d / f"{k}.png").convert("L") for k in names]
            rows.append(ims)
    if not rows:
        return None
    scale = 4
    w, h = rows[0][0].width * scale, rows[0][0].height * scale
    grid = Image.new("L", (5 * w + 4 * 4, len(rows) * h + (len(rows) - 1) * 4), 255)
    for i, ims in enumerate(rows):
        for j, im in enumerate(ims):
            grid.paste(im.resize((w, h), Image.NEAREST), (j * (w + 4), i * (h + 4)))
    return grid


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEMO_CONFIG)
    p.add_argument("--no-ablations", action="store_true", help="the full model only")
    p.add_argument("--ablations", nargs="+", choices=list(ABLATIONS), default=list(ABLATIONS),
                   help="the objectives to remove, one run each (default: all three)")
    p.add_argument("--jobs", type=int, default=1, help="train the full model and the ablations as this many "
                   "parallel processes (each a plain `python -m projects.oneavm.train` run)")
    p.add_argument("--n-train", type=int, default=1536, help="demo: training clips to compose")
    p.add_argument("--n-test", type=int, default=96, help="demo: test clips (and separation pairs)")
    p.add_argument("--distractors", choices=["silent", "sounding"], default="silent",
                   help="demo: the objects beside the sounding one are silent pictures (default) or other sounding classes")
    p.add_argument("--n-distractors", type=int, default=32, help="demo: silent pictures to draw the distractors from")
    p.add_argument("--object-frac", type=float, nargs=2, default=(0.5, 0.7), metavar=("MIN", "MAX"),
                   help="demo, --placement free: each object's longer side as a fraction of the frame's")
    p.add_argument("--placement", choices=["cells", "free"], default="cells",
                   help="demo: one object per cell of a 2-3 cell split of the frame (default), or free placement")
    p.add_argument("--report-only", action="store_true", help="no training: rebuild the table, the results files "
                   "and the figures from the finished runs (<run>/reproduce.json)")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    runs = {"full": list(a.overrides)}
    if not a.no_ablations:
        runs.update({tag: [*a.overrides, ABLATIONS[tag], f"run.name={cfg.run.name}_{tag}"] for tag in a.ablations})
    if a.report_only:
        saved = run_dir_of(cfg) / "reproduce.json"
        if not saved.is_file():
            raise FileNotFoundError(f"{saved} not found: run `python -m projects.oneavm.reproduce` (without --report-only) first")
        results = json.loads(saved.read_text())
        missing = [t for t in ("untrained", *runs) if not results.get(t)]
        if missing:
            raise ValueError(f"{saved} has no results for {missing} (was it made with --no-ablations?)")
        return report(cfg, a, {t: results[t] for t in ("untrained", *runs)}, runs)
    if Path(a.config).stem.startswith("demo"):
        prepare_demo(cfg, a.n_train, a.n_test, a.distractors, a.n_distractors, a.object_frac, a.placement)
    results = {"untrained": None, **{k: None for k in runs}}
    if a.jobs > 1:
        results.update(train_parallel(a.config, runs, a.jobs))
        results["untrained"] = untrained(cfg)
    else:
        from projects.oneavm.train import main as train_main

        results["untrained"] = untrained(cfg)
        for tag, over in runs.items():
            results[tag] = train_main(load_config(a.config, over))
    run_dir_of(cfg).mkdir(parents=True, exist_ok=True)
    (run_dir_of(cfg) / "reproduce.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return report(cfg, a, results, runs)


def command_line(a) -> str:
    """The reproduce command that makes these results (the demo config and the chosen runs)."""
    cmd = "python -m projects.oneavm.reproduce"
    if a.config != DEMO_CONFIG:
        cmd += f" --config {a.config}"
    if a.no_ablations:
        cmd += " --no-ablations"
    elif list(a.ablations) != list(ABLATIONS):
        cmd += " --ablations " + " ".join(a.ablations)
    return cmd


def report(cfg, a, results: dict, runs: dict) -> dict:
    """The markdown table beside the runs; for the demo also projects/oneavm/results/demo_<task>.json and figures."""
    md = table(cfg, [(LABELS[k], v) for k, v in results.items()])
    run_dir = run_dir_of(cfg)
    (run_dir / "results_table.md").write_text(md + "\n")
    stem = Path(a.config).stem
    if stem.startswith("demo") and dist.is_main():
        from shared.report import write_results

        runs = {tag: run_dir_of(load_config(a.config, over)) for tag, over in runs.items()}
        figs = figures(cfg, runs, Path(__file__).parent / "figures", stem)
        steps = results["full"].get("steps")
        for task, rows in result_rows(cfg, results).items():
            write_results("oneavm", f"{stem}_{task}", rows,
                          figures=[f for f in figs if f["kind"] == task],
                          command=command_line(a),
                          scale=f"tuxpaint demo set ({a.n_train} training clips, {cfg.data.image_size} px frames, "
                                f"{cfg.data.audio.n_samples / cfg.data.audio.sample_rate:.2f} s clips; batch "
                                f"{cfg.optim.batch_size}, {steps} steps; CPU)",
                          title=f"Demo {task}{'' if stem == 'demo' else f' at {cfg.data.image_size} px'} "
                                "(tuxpaint pictures and sounds, CPU)")
    print("\n" + md + f"\n\nwritten to {run_dir}/results_table.md; heatmaps, spectrograms and wavs in {run_dir}/viz/")
    return results


if __name__ == "__main__":
    main()

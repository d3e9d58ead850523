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


def prepare_demo(cfg, n_train: int, n_test: int) -> None:
    from shared.data.tuxpaint import make_tuxpaint_av

    make_tuxpaint_av(cfg.data.root, n_train=n_train, n_test=n_test, n_duet=max(8, n_test // 2),
                     n_pairs=n_test, size=2 * cfg.data.image_size,
                     duration=cfg.data.audio.n_samples / cfg.data.audio.sample_rate + 0.05, seed=cfg.run.seed)
    weights = cfg.model.image_weights
    if weights and weights != "torchvision" and not Path(weights).is_file():
        # the demo's stand-in for ImageNet: a classifier of the object pictures (pretrain_demo.py)
        from projects.oneavm.pretrain_demo import pretrain

        info = pretrain(Path(weights).parent, weights, image_size=cfg.data.image_size, seed=cfg.run.seed)
        print(f"pretrained the demo image encoder: object-class accuracy {100 * info['val_accuracy']:.1f}% -> {weights}")


def untrained(cfg) -> dict:
    from projects.oneavm.eval import evaluate_all
    from projects.oneavm.data import train_set
    from projects.oneavm.train import build_model

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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEMO_CONFIG)
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="train the full model and the ablations as this many "
                   "parallel processes (each a plain `python -m projects.oneavm.train` run)")
    p.add_argument("--n-train", type=int, default=384, help="demo: training clips to compose")
    p.add_argument("--n-test", type=int, default=48, help="demo: test clips (and separation pairs)")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    if Path(a.config).name == "demo.yaml":
        prepare_demo(cfg, a.n_train, a.n_test)
    runs = {"full": list(a.overrides)}
    if not a.no_ablations:
        runs.update({tag: [*a.overrides, o, f"run.name={cfg.run.name}_{tag}"] for tag, o in ABLATIONS.items()})
    results = {"untrained": None, **{k: None for k in runs}}
    if a.jobs > 1:
        results.update(train_parallel(a.config, runs, a.jobs))
        results["untrained"] = untrained(cfg)
    else:
        from projects.oneavm.train import main as train_main

        results["untrained"] = untrained(cfg)
        for tag, over in runs.items():
            results[tag] = train_main(load_config(a.config, over))
    labels = {"untrained": "untrained (init)", "full": "OneAVM (all three objectives)",
              "no_loc": "without localized correspondence", "no_sep": "without mix-and-separate",
              "no_mix": "without image mixing"}
    md = table(cfg, [(labels[k], v) for k, v in results.items()])
    run_dir = run_dir_of(cfg)
    (run_dir / "results_table.md").write_text(md + "\n")
    (run_dir / "reproduce.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\n" + md + f"\n\nwritten to {run_dir}/results_table.md; heatmaps, spectrograms and wavs in {run_dir}/viz/")
    return results


if __name__ == "__main__":
    main()

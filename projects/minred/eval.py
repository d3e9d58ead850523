"""Continual-ImageNet evaluation: accuracy per split at 25 / 50 / 75 / 100 % of the stream and forgetting.

    python -m projects.minred.eval --config projects/minred/configs/continual_in_r18_minred.yaml [key=value ...]

Reads the run's model snapshots (``train.snapshot_every``, official every 5 %), takes the one at each
``eval.continual_points`` fraction, trains the LARS linear probe on L2-normalised features of
``eval.continual_set`` (all classes) and scores it per split (``eval.continual_splits``: 'label split'
lines). Forgetting (absolute points, the official code does not define it): for the split learned in
part i of the stream, its accuracy at the end of part i minus its accuracy at the end of each later part.
Writes <run>/continual.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from shared.checkpoint import load_weights
from shared.config import config_arg_parser, load_config
from shared.run import run_dir_of
from projects.minred.probes import continual_metrics, evaluate_backbone
from projects.minred.data import probe_sets
from projects.minred.model import build_model


def read_splits(path) -> dict[int, int]:
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
            raise ValueError(f"{path}:{n}: expected 'label split', got {line[:80]!r}")
        out[int(parts[0])] = int(parts[1])
    return out


def snapshot_at(run_dir: Path, fraction: float) -> Path:
    snaps = sorted((run_dir / "snapshots").glob("checkpoint_*.pth"))
    if not snaps:
        raise FileNotFoundError(f"no model snapshots in {run_dir / 'snapshots'} (train.snapshot_every > 0 writes them)")
    prog = [float(p.stem.split("_")[1]) for p in snaps]
    best = min(range(len(snaps)), key=lambda i: abs(prog[i] - fraction))
    if abs(prog[best] - fraction) > 0.05:
        raise FileNotFoundError(f"no snapshot within 5 % of {fraction:.0%} of the stream in {run_dir / 'snapshots'}")
    return snaps[best]


def per_split_accuracy(pred: torch.Tensor, labels: torch.Tensor, split_of: dict[int, int], n_splits: int) -> list[float]:
    splits = torch.tensor([split_of.get(int(c), -1) for c in labels])
    if (splits < 0).any():
        raise ValueError(f"{int((splits < 0).sum())} evaluation images have a label missing from eval.continual_splits")
    correct = (pred == labels).float()
    return [100.0 * float(correct[splits == k].mean()) for k in range(n_splits)]


def main(argv=None) -> dict:
    p = config_arg_parser(__doc__)
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    e = cfg.eval
    if not e.continual_set or not e.continual_splits:
        raise ValueError("set eval.continual_set (an eval.sets entry) and eval.continual_splits ('label split' file)")
    split_of = read_splits(e.continual_splits)
    n_splits = len(e.continual_order)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sets = {e.continual_set: probe_sets(load_config(a.config, [*a.overrides, f"eval.datasets=[{e.continual_set}]"]))[e.continual_set]}
    run_dir = run_dir_of(cfg)
    acc = []
    for frac in e.continual_points:
        model = build_model(load_config(a.config, [*a.overrides, "model.pretrained=null"]))
        model.load_state_dict(load_weights(snapshot_at(run_dir, frac), key="state_dict"))
        res = evaluate_backbone(model.to(device), cfg, device, sets, keep_predictions=True)
        labels = sets[e.continual_set][1].labels
        acc.append(per_split_accuracy(res[f"{e.continual_set}/_predictions"].cpu(), labels, split_of, n_splits))
    out = {"points": list(e.continual_points), "acc_per_split": acc, **continual_metrics(acc, list(e.continual_order)),
           "paper": dict(cfg.paper) if cfg.paper else None}
    (run_dir / "continual.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

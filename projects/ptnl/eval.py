"""Test-split evaluation: the prompt-tuned model, zero-shot CLIP, the linear-probe baseline, and
seed means / prompt ensembles of saved test logits.

    python -m projects.ptnl.eval --runs runs/ptnl/dtd_coop_random0.5_gce_seed1 runs/ptnl/..._seed2 ...

prints, for a set of runs of one configuration, the mean and std over seeds of the test accuracy
and the accuracy of the ensemble (test logits averaged), as UPL's ``upl_test.py`` does.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch.utils.data import DataLoader

from shared.amp import autocast
from shared.clip.datasets import ImageListDataset, labels_of
from shared.clip.zeroshot import encode_images, logit_scale, text_classifier, zero_shot_logits
from shared.logging import progress
from shared.metrics.logreg_probe import fit_logreg_probe

log = logging.getLogger(__name__)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Top-1 accuracy, macro-F1 and mean per-class accuracy, in %, as Dassl's Classification
    evaluator: macro-F1 is scikit-learn's ``f1_score(average="macro", labels=np.unique(y_true))``, so a
    class that is predicted but absent from the truth does not enter the average (its wrong
    predictions still lower the other classes' recall)."""
    pred = logits.argmax(-1).cpu().numpy()
    y = labels.cpu().numpy()
    present = np.unique(y)
    per_class = [float(np.mean(pred[y == c] == c)) for c in present]
    f1 = f1_score(y, pred, average="macro", labels=present, zero_division=0)
    return {"accuracy": 100 * float((pred == y).mean()), "macro_f1": 100 * float(f1),
            "mean_per_class_accuracy": 100 * float(np.mean(per_class)), "n": int(len(y))}


@torch.no_grad()
def predict(model, loader: DataLoader, device: torch.device, amp: str | None, desc: str = "test"):
    """Logits [N, C] (fp32, CPU) and true labels of the CoOp model over ``loader``; the prompts'
    text features are computed once."""
    model.eval()
    with autocast(device, amp):
        txt = model.text_features()
    out, labels = [], []
    for batch in progress(loader, desc=desc):
        with autocast(device, amp):
            out.append(model(batch["image"].to(device, non_blocking=True), txt).float().cpu())
        labels.append(torch.as_tensor(batch["true_label"]))
    return torch.cat(out), torch.cat(labels)


def zero_shot_eval(bundle, ds, cfg, device: torch.device) -> tuple[dict, torch.Tensor, torch.Tensor]:
    model = bundle.model.to(device).eval()
    clf = text_classifier(model, bundle.tokenizer, ds.classnames, ds.template, device)
    loader = DataLoader(ImageListDataset(ds.test, bundle.preprocess), batch_size=cfg.eval.batch_size,
                        num_workers=cfg.data.num_workers)
    feats, labels = encode_images(model, loader, device, cfg.train.amp, desc=f"zero-shot {ds.name} test")
    logits = zero_shot_logits(feats, clf.cpu(), logit_scale(model))
    return classification_metrics(logits, labels, ds.num_classes), logits, labels


def linear_probe_eval(bundle, ds, sel, cfg, device: torch.device) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """PTNL's linear-probe baseline: LogisticRegression on CLIP image features (CLIP test transform
    for train and test, unnormalised unless probe.normalize) of the noisy few-shot set."""
    model = bundle.model.to(device).eval()
    norm = bool(cfg.probe.normalize)

    def feats(items, labels=None, desc=""):
        loader = DataLoader(ImageListDataset(items, bundle.preprocess, labels), batch_size=cfg.eval.batch_size,
                            num_workers=cfg.data.num_workers)
        return encode_images(model, loader, device, cfg.train.amp, normalize=norm, desc=desc)

    train_items = [ds.train[i] for i in sel.indices]
    tr_x, _ = feats(train_items, desc="probe train features")
    val_x = val_y = None
    if cfg.probe.C == "search":
        rng = np.random.default_rng(cfg.run.seed)
        vy = labels_of(ds.val)
        k = min(int(cfg.fewshot.shots), int(cfg.probe.val_shots))
        pick = [int(i) for c in range(ds.num_classes) for i in
                rng.choice(np.flatnonzero(vy == c), size=min(k, int((vy == c).sum())), replace=False)]
        val_x, val_y = feats([ds.val[i] for i in pick], desc="probe val features")
    te_x, te_y = feats(ds.test, desc="probe test features")
    res = fit_logreg_probe(tr_x.numpy(), sel.labels, None if val_x is None else val_x.numpy(),
                           None if val_y is None else val_y.numpy(), C=cfg.probe.C, num_classes=ds.num_classes)
    probs = torch.from_numpy(res.predict_proba(te_x.numpy())).float()
    m = classification_metrics(probs, te_y, ds.num_classes)
    m["C"] = res.C
    return m, torch.log(probs.clamp_min(1e-12)), te_y


def ensemble(run_dirs: list[str | Path]) -> dict:
    """Mean/std over runs of their test accuracy, and the accuracy of their averaged test logits."""
    accs, logits, labels = [], [], None
    for r in run_dirs:
        r = Path(r)
        res = json.loads((r / "results.json").read_text())
        accs.append(res["test"]["accuracy"])
        f = r / "test_logits.pt"
        if f.is_file():
            d = torch.load(f, weights_only=False)
            if labels is not None and not torch.equal(labels, d["labels"]):
                raise ValueError(f"{f}: test labels differ from the other runs'")
            labels = d["labels"]
            logits.append(d["logits"].float())
    out = {"runs": len(accs), "mean": float(np.mean(accs)), "std": float(np.std(accs)), "accuracies": accs}
    if logits and len(logits) == len(accs):
        avg = torch.stack(logits).mean(0)  # UPL's ensemble: test logits averaged
        out["ensemble"] = 100 * float((avg.argmax(-1) == labels).float().mean())
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders of one configuration (one per seed)")
    a = p.parse_args(argv)
    out = ensemble(a.runs)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

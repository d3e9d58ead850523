"""The whole Patch Ranking pipeline and its table.

    python -m projects.patch_ranking.reproduce                       # the demo (CPU, minutes, no download)
    python -m projects.patch_ranking.reproduce --config projects/patch_ranking/configs/oxford_pets.yaml data.root=$DATA

The demo:
1. writes Fashion-MNIST in CoOp's layout (``data/patch_ranking_demo/fashion_mnist``, split_zhou json);
2. makes sure the shared demo CLIP is trained (``shared/clip/demo_clip.py``; its cache
   ``data/demo_clip/demo-clip-fmnist.pt`` is shared with the PTNL demo and reused when present);
3. runs the pipeline (``train.main``): golden rankings of 2,000 train and all 1,000 test images,
   the predictor, the learned tokens with the predictor-pruned model in the loop, the evaluation;
4. prints the table and the evidence checks, and writes them to ``<run>/results_table.md``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from shared.checkpoint import atomic_write_text
from shared.config import load_config
from shared.run import run_dir_of

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"
NAMES = {"none": "unpruned", "golden": "golden ranking (oracle)", "predictor": "predictor (ours)",
         "predictor+tokens": "predictor + learned tokens (ours)", "none+tokens": "unpruned + learned tokens",
         "random": "random", "evit": "EViT", "tome": "ToMe"}


def prepare_demo(cfg) -> dict:
    from shared.clip.demo_clip import ensure_demo_clip
    from shared.clip.demo_data import write_fashion_mnist_coop

    t = time.time()
    write_fashion_mnist_coop(cfg.data.root, n_train=200, n_val=10, n_test=100)   # per class: 2,000 / 100 / 1,000
    ensure_demo_clip(cfg.clip.pretrained)
    return {"prepare_s": time.time() - t}


def _row(rows, method, keep):
    return next((r for r in rows if r["method"] == method and r["keep_ratio"] == keep), None)


def table(res: dict) -> str:
    rows = res["eval"]
    keeps = sorted({r["keep_ratio"] for r in rows if r["keep_ratio"] is not None}, reverse=True)
    out = [f"Zero-shot top-1 (%) on {res['dataset']} test ({res['arch']}; pruning before block "
           f"{res['stages'][0][0]}); GFLOPs of the image encoder (+ predictor) per image; images/s on this machine.", "",
           "| method | " + " | ".join(f"keep {100 * k:g} %" for k in keeps) + " | GFLOPs at keep "
           f"{100 * keeps[-2] if len(keeps) > 1 else 100:g} % | images/s |", "|---|" + "---|" * (len(keeps) + 2)]
    ref_keep = keeps[-2] if len(keeps) > 1 else keeps[0]
    for m in ("none", "none+tokens", "golden", "predictor", "predictor+tokens", "random", "evit", "tome"):
        cells = []
        for k in keeps:
            r = _row(rows, m, k) or (_row(rows, m, 1.0) if m.startswith("none") and k == 1.0 else None)
            cells.append(f"{r['top1']:.1f}" + (f" ({r['images']} img)" if m == "golden" else "") if r else "-")
        ref = _row(rows, m, 1.0 if m.startswith("none") else ref_keep)
        if not any(c != "-" for c in cells):
            continue
        out.append(f"| {NAMES[m]} | " + " | ".join(cells) + f" | {ref['gflops']:.4g} | "
                   f"{ref.get('images_per_s', float('nan')):.0f} |" if ref else f"| {NAMES[m]} | " + " | ".join(cells)
                   + " | - | - |")
    p = res.get("predictor")
    if p:
        out += ["", f"Predictor top-{p['overlap_n']} overlap with the golden ranking's tail: train "
                f"{p['train_overlap']:.1f} %, test {p.get('test_overlap', float('nan')):.1f} % (chance "
                f"{100 * p['overlap_n'] / res['num_patches']:.1f} %; {p['train_images']} train images ranked)."]
    return "\n".join(out)


def evidence(res: dict, keep: float) -> list[str]:
    rows = res["eval"]
    g = lambda m: (_row(rows, m, keep) or {}).get("top1")  # noqa: E731
    none = (_row(rows, "none", 1.0) or {}).get("top1")
    pred, rnd, gold, tok = g("predictor"), g("random"), g("golden"), g("predictor+tokens")
    lines = []

    def check(ok, text):
        lines.append(f"- [{'holds' if ok else 'does NOT hold'}] {text}")

    if pred is not None and rnd is not None:
        check(pred > rnd + 1.0, f"predictor-pruned accuracy above random pruning: {pred:.1f} vs {rnd:.1f}")
    if gold is not None and pred is not None:
        check(gold > pred, f"golden (oracle) above the predictor: {gold:.1f} vs {pred:.1f} "
              f"(golden on {(_row(rows, 'golden', keep) or {}).get('images')} images)")
    if tok is not None and pred is not None and none is not None:
        lost = none - pred
        check(tok > pred, f"learned tokens recover part of the loss: unpruned {none:.1f}, pruned {pred:.1f}, "
              f"pruned + tokens {tok:.1f} ({100 * (tok - pred) / lost:.0f} % of the {lost:.1f}-point loss)"
              if lost > 0 else f"learned tokens: pruned {pred:.1f} -> {tok:.1f} (pruning lost nothing here)")
    return lines


def main(argv=None) -> dict:
    from projects.patch_ranking.train import main as train_main

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEMO_CONFIG))
    p.add_argument("overrides", nargs="*", help="dotted config overrides, key.sub=value")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    info = prepare_demo(cfg) if Path(a.config).resolve() == DEMO_CONFIG.resolve() else {}
    t = time.time()
    res = train_main(cfg)
    keep = res["stages"][0][1] / res["num_patches"]
    keep = min((r["keep_ratio"] for r in res["eval"] if r["keep_ratio"] not in (None, 1.0)),
               key=lambda k: abs(k - keep), default=None)
    text = table(res) + "\n\nEvidence at keep " + f"{100 * keep:g} %:\n" + "\n".join(evidence(res, keep))
    text += f"\n\nPipeline time: {time.time() - t:.0f} s" + (f" (+ {info['prepare_s']:.0f} s data and demo CLIP)"
                                                            if info else "") + "\n"
    print(text, flush=True)
    atomic_write_text(run_dir_of(cfg) / "results_table.md", text)
    return res


if __name__ == "__main__":
    main()

"""The whole Patch Ranking pipeline and its table.

    python -m projects.patch_ranking.reproduce                       # the demo (CPU, minutes, no download)
    python -m projects.patch_ranking.reproduce --config projects/patch_ranking/configs/oxford_pets.yaml data.root=$DATA
    python -m projects.patch_ranking.reproduce --paper-table [run.root=<dir>]   # the paper table only (no training)

The demo:
1. writes Fashion-MNIST in CoOp's layout (``data/patch_ranking_demo/fashion_mnist``, split_zhou json);
2. makes sure the shared demo CLIP is trained (``shared/clip/demo_clip.py``; its cache
   ``data/demo_clip/demo-clip-fmnist.pt`` is shared with the PTNL demo and reused when present);
3. runs the pipeline (``train.main``): golden rankings of 2,000 train and all 1,000 test images,
   the predictor, the learned tokens with the predictor-pruned model in the loop, the evaluation;
4. prints the table and the evidence checks, and writes them to ``<run>/results_table.md``, the rows
   beside them (``<run>/<config>_results_table.json``/``.md``) with the accuracy-vs-keep figure in
   ``<run>/figures/``, and the paper table (``runs/patch_ranking/paper_results_table.*``).

The demo as configured (demo.yaml, no overrides) also writes the committed
``projects/patch_ranking/results/{demo,paper}.json`` (``shared.report``: the README's ``results:``
blocks) and ``figures/demo_accuracy_vs_keep.png``; a changed demo never does. The paper table has one
row per number in the configs' ``paper:`` blocks, ours read from that config's run folder
(results.json) or "not run".
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shared.checkpoint import atomic_write_text
from shared.config import load_config
from shared.report import markdown_table, save_table, plot_xy
from shared.run import run_dir_of

HERE = Path(__file__).resolve().parent
DEMO_CONFIG = HERE / "configs" / "demo.yaml"
CONFIGS = HERE / "configs"
FIGURES = HERE / "figures"
NAMES = {"none": "unpruned", "golden": "golden ranking (oracle)", "predictor": "predictor (ours)",
         "predictor+tokens": "predictor + learned tokens (ours)", "none+tokens": "unpruned + learned tokens",
         "random": "random", "evit": "EViT", "tome": "ToMe"}
ORDER = ("none", "none+tokens", "golden", "predictor", "predictor+tokens", "random", "evit", "tome")
# the official README's column order
PAPER_ORDER = ("caltech101", "oxford_pets", "oxford_flowers", "food101", "fgvc_aircraft", "dtd", "ucf101", "imagenet")
OURS = "ours: predictor + learned tokens"
PAPER_METHODS = {"ours": OURS, "evit": "EViT", "tome": "ToMe",
                 "ours_imagenet_predictor": "ours: ImageNet-trained predictor + learned tokens"}
PAPER_EVAL = {"ours": "predictor+tokens", "evit": "evit", "tome": "tome",
              "ours_imagenet_predictor": "predictor+tokens"}
TOP1, GFLOPS = "zero-shot top-1 (%)", "GFLOPs (image encoder + predictor)"
MFLOPS = "MFLOPs per image (image encoder + predictor)"


def prepare_demo(cfg) -> dict:
    from shared.clip.demo_clip import ensure_demo_clip
    from shared.clip.demo_data import write_fashion_mnist_coop

    t = time.time()
    write_fashion_mnist_coop(cfg.data.root, n_train=200, n_val=10, n_test=100)   # per class: 2,000 / 100 / 1,000
    ensure_demo_clip(cfg.clip.pretrained)
    return {"prepare_s": time.time() - t}


def _row(rows, method, keep):
    return next((r for r in rows if r["method"] == method and r["keep_ratio"] == keep), None)


def reference_keep(res: dict) -> float | None:
    """The evaluated keep ratio nearest the config's pruning stage (the paper's budget): None for
    multi-stage configs, which are evaluated at their stages only."""
    keep = res["stages"][0][1] / res["num_patches"]
    return min((r["keep_ratio"] for r in res["eval"] if r["keep_ratio"] not in (None, 1.0)),
               key=lambda k: abs(k - keep), default=None)


def _keeps(res: dict) -> list[float]:
    return sorted({r["keep_ratio"] for r in res["eval"] if r["keep_ratio"] is not None}, reverse=True)


def table(res: dict) -> str:
    rows = res["eval"]
    keeps = _keeps(res)
    ref_keep = reference_keep(res) or keeps[0]
    out = [f"Zero-shot top-1 (%) on {res['dataset']} test ({res['arch']}; pruning before block "
           f"{res['stages'][0][0]}); GFLOPs of the image encoder (+ predictor) per image; images/s on this machine.", "",
           "| method | " + " | ".join(f"keep {100 * k:g} %" for k in keeps) + f" | GFLOPs at keep {100 * ref_keep:g} % "
           "| images/s |", "|---|" + "---|" * (len(keeps) + 2)]
    for m in ORDER:
        cells = []
        for k in keeps:
            r = _row(rows, m, k)
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


# ------------------------------------------------------------------------------------- demo table
def _r(method: str, metric: str, ours, paper=None, setting=None) -> dict:
    return {"setting": setting, "method": method, "metric": metric, "paper": paper, "ours": ours}


def _top1_metric(keep: float) -> str:
    return f"top-1 (%), keep {100 * keep:g} %"


def demo_rows(res: dict) -> list[dict]:
    """The run as ``shared.report`` rows: zero-shot top-1 per method and keep ratio, the FLOPs at the
    reference keep (unpruned rows: at 100 %), the predictor's overlap with the golden tail beside chance."""
    rows, ref = [], reference_keep(res)
    for m in ORDER:  # all top-1 rows first: the table's columns follow the order metrics first appear in
        rows += [_r(NAMES[m], _top1_metric(r["keep_ratio"]), round(r["top1"], 2)) for r in res["eval"]
                 if r["method"] == m and r["keep_ratio"] is not None]
    # MFLOPs: the demo tower's GFLOPs would print as 0.01 at the report's two digits
    flops = MFLOPS if ref is None else f"{MFLOPS}, keep {100 * ref:g} % (unpruned: 100 %)"
    for m in ORDER:
        at = _row(res["eval"], m, 1.0 if m.startswith("none") else ref)
        if at is not None:
            rows.append(_r(NAMES[m], flops, round(1000 * at["gflops"], 3)))
    p = res.get("predictor")
    if p:
        n = p["overlap_n"]
        metrics = [(f"top-{n} overlap with the golden tail, train (%)", "train_overlap"),
                   (f"top-{n} overlap with the golden tail, test (%)", "test_overlap")]
        rows += [_r(NAMES["predictor"], name, round(p[key], 2)) for name, key in metrics if p.get(key) is not None]
        rows += [_r("random ranking (chance)", name, round(100 * n / res["num_patches"], 2))
                 for name, key in metrics if p.get(key) is not None]
    return rows


def demo_scale(cfg, res: dict) -> str:
    g, p = cfg.golden, cfg.prompts
    layer, kept = res["stages"][0]
    images = sorted({r["images"] for r in res["eval"]})
    return (f"{res['dataset']} in CoOp's layout, {'/'.join(map(str, images))} test images; {res['arch']} "
            f"({res['num_patches']} patches), pruned before block {layer}, reference budget {kept} of "
            f"{res['num_patches']} patches kept; golden search: {g.steps} greedy steps of {g.tokens_per_step} "
            f"({g.block_size}x{g.block_size} blocks, {g.score} score) on {g.train_images} train images; predictor "
            f"tail {cfg.predictor.tail}, {cfg.predictor.epochs} epochs; learned tokens {p.n_vis} + {p.n_txt}, "
            f"{p.shots} shots, {p.epochs} epochs, SGD {p.lr}; {cfg.run.device.upper()}")


def figure(res: dict, path: Path) -> Path:
    """Zero-shot top-1 against the fraction of patches kept, one line per method; unpruned as references."""
    import matplotlib.pyplot as plt

    lines = {}
    for m in ORDER[2:]:
        pts = sorted((100 * r["keep_ratio"], r["top1"]) for r in res["eval"]
                     if r["method"] == m and r["keep_ratio"] is not None)
        if pts:
            lines[NAMES[m]] = ([x for x, _ in pts], [y for _, y in pts])
    refs = {NAMES[m]: r["top1"] for m in ("none", "none+tokens") if (r := _row(res["eval"], m, 1.0))}
    fig = plot_xy(lines, path, xlabel="patches kept (%)", ylabel=f"zero-shot top-1 (%), {res['dataset']} test",
                  title=f"{res['arch']}: pruning before block {res['stages'][0][0]}", hlines=refs)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ paper table
def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def config_paper_rows(cfg, name: str) -> list[dict]:
    """One row per number of ``cfg.paper``, ours from the run folder's results.json at the config's budget."""
    res = _read_json(run_dir_of(cfg) / "results.json")
    ref = reference_keep(res) if res.get("eval") else None
    at = lambda m: _row(res.get("eval", []), m, ref)  # noqa: E731
    setting = f"{cfg.data.dataset} ({name})"
    # the ImageNet-trained predictor: the ImageNet run itself, or a run given its predictor.pt
    imagenet_predictor = cfg.data.dataset == "ImageNet" or bool(cfg.predictor.checkpoint)
    rows = []
    for key, value in cfg.paper.items():
        if key == "gflops":
            r = at("predictor+tokens")
            rows.append(_r(OURS, GFLOPS, round(r["gflops"], 2) if r else None, value, setting))
        elif key in PAPER_METHODS:
            r = at(PAPER_EVAL[key]) if key != "ours_imagenet_predictor" or imagenet_predictor else None
            rows.append(_r(PAPER_METHODS[key], TOP1, round(r["top1"], 2) if r else None, value, setting))
        else:
            raise ValueError(f"configs/{name}.yaml: paper key {key!r} has no metric name here "
                             f"(known: {sorted(PAPER_METHODS)}, gflops)")
    return rows


def paper_configs(overrides=()) -> list[tuple[str, object]]:
    """(name, config) of every config with a ``paper:`` block, in the official README's order."""
    cfgs = [(p.stem, load_config(p, overrides)) for p in sorted(CONFIGS.glob("*.yaml"))]
    rank = lambda n: PAPER_ORDER.index(n) if n in PAPER_ORDER else len(PAPER_ORDER)  # noqa: E731
    return sorted(((n, c) for n, c in cfgs if c.paper), key=lambda nc: (rank(nc[0]), nc[0]))


def paper_rows(overrides=()) -> list[dict]:
    return [r for name, cfg in paper_configs(overrides) for r in config_paper_rows(cfg, name)]


def paper_scale(rows: list[dict]) -> str:
    settings = {r["setting"] for r in rows}
    run = {r["setting"] for r in rows if r["ours"] is not None}
    return ("the paper's setting (official README table): OpenAI CLIP ViT-B/16, 40 % of the patches pruned before "
            "block 3, one config per dataset in projects/patch_ranking/configs/; ours from "
            f"runs/patch_ranking/<config>/results.json: {len(run)} of {len(settings)} configs run")


# ----------------------------------------------------------------------------------------- writing
def write_paper_table(overrides, official: bool, out_dir: Path) -> list[dict]:
    rows = paper_rows(overrides)
    save_table("patch_ranking", "paper", rows, official, out_dir, scale=paper_scale(rows),
               command="python -m projects.patch_ranking.reproduce --paper-table",
               title="Paper table (official README, ViT-B/16) and ours on the real data",
               notes="Ours: FLOPs counted by FlopCounterMode, 2 per multiply-add, attention included; the paper's "
                     "GFLOPs column is the same for every method (README: most likely the unpruned encoder in "
                     "multiply-adds).")
    return rows


def main(argv=None) -> dict:
    from projects.patch_ranking.train import main as train_main

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEMO_CONFIG))
    p.add_argument("--paper-table", action="store_true",
                   help="train nothing: the paper table from the configs' paper: blocks and their run folders")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, key.sub=value")
    a = p.parse_args(argv)
    if a.paper_table:
        rows = write_paper_table(a.overrides, not a.overrides,
                                 Path(load_config(DEMO_CONFIG, a.overrides).run.root) / "patch_ranking")
        print(markdown_table(rows, pivot=True))
        return {"paper": rows}
    cfg = load_config(a.config, a.overrides)
    demo = Path(a.config).resolve() == DEMO_CONFIG
    # the committed results and figure come from the demo as configured, never from a changed one
    official = demo and not a.overrides
    info = prepare_demo(cfg) if demo else {}
    t = time.time()
    res = train_main(cfg)
    keep = reference_keep(res)
    text = table(res)
    if keep is not None:
        text += "\n\nEvidence at keep " + f"{100 * keep:g} %:\n" + "\n".join(evidence(res, keep))
    text += f"\n\nPipeline time: {time.time() - t:.0f} s" + (f" (+ {info['prepare_s']:.0f} s data and demo CLIP)"
                                                            if info else "") + "\n"
    print(text, flush=True)
    run_dir = run_dir_of(cfg)
    atomic_write_text(run_dir / "results_table.md", text)
    name = "demo" if demo else Path(a.config).stem
    fig = figure(res, (FIGURES if official else run_dir / "figures") / f"{name}_accuracy_vs_keep.png")
    save_table("patch_ranking", name, demo_rows(res), official, run_dir, scale=demo_scale(cfg, res),
               figures=[(str(fig), "zero-shot top-1 vs the fraction of patches kept, per method")],
               command="make reproduce-patch_ranking  (= python -m projects.patch_ranking.reproduce)" if demo else
               f"python -m projects.patch_ranking.reproduce --config {a.config} {' '.join(a.overrides)}".strip(),
               title=f"{'Demo' if demo else cfg.run.name}: pruning methods on {res['dataset']} ({res['arch']})",
               notes=f"Pipeline time {time.time() - t:.0f} s on this machine"
                     + (f" (+ {info['prepare_s']:.0f} s data and demo CLIP)" if info else "") + ".")
    write_paper_table([o for o in a.overrides if o.startswith("run.root=")], official,
                      Path(cfg.run.root) / "patch_ranking")
    return res


if __name__ == "__main__":
    main()

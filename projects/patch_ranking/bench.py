"""Image-encoder speed of CLIP ViT-B/16, unpruned vs 40 % of the patch tokens pruned before block 3, in
one run on the device present (random weights: no download; speed does not depend on the values):

- unpruned: ``model.encode_image``;
- pruned, plain gather: a fixed keep list per image (no predictor; the reference setting);
- pruned with the predictor: the Mixer predictor scores the tokens after block 3, top-K kept;
- the predictor alone (its share of the pruned encoder's time).

FLOPs by torch's FlopCounterMode on one image (2 per multiply-add; attention counted, see
eval.count_encoder_flops); time by shared.benchmark (warm-up, synchronisation,
median of repeats), bf16 autocast on CUDA (fp32 on CPU), SDPA attention (nn.MultiheadAttention's
fused path in inference).

    python -m projects.patch_ranking.bench [--arch ViT-B-16] [--batch 256] [--keep 0.6] [--layer 3] [--out bench.json]
        [--budget-s S] [--summary-json PATH]

``--budget-s`` (``make bench``): the seconds the whole bench may take; the repeats stop when a
measurement's share is spent, and on the CPU the batch defaults to 2. ``--summary-json``: the common
record (shared.benchmark.summary) of the pruned encoder with the predictor, fp32 against bf16
(on CUDA the bench times that case once more without autocast).
"""
from __future__ import annotations

import argparse

import torch

from shared.amp import autocast
from shared.benchmark import (Budget, peak_memory_gb, peak_tflops, reset_peak_memory, summary, time_fn,
                              add_output_args, parse_bench_args, write_outputs)
from projects.patch_ranking.eval import count_encoder_flops
from shared.clip.models import load_clip
from projects.patch_ranking.model import PrunedCLIP
from projects.patch_ranking.predictor import MixerPredictor
from projects.patch_ranking.pruning import embed, encode_image_pruned, num_patches, run_blocks


def run(arch: str, batch: int, keep: float, layer: int, repeats: int, device: torch.device,
        budget: Budget | None = None) -> dict:
    budget = budget or Budget(None)
    cuda = device.type == "cuda"
    left = 5 if cuda else 4  # timings still to come: three cases, the predictor, the fp32 twin on CUDA
    torch.manual_seed(0)
    bundle = load_clip(arch, None, device=device, quick_gelu=True)
    clip = bundle.model.to(device)
    n = num_patches(clip.visual)
    model = PrunedCLIP(clip, bundle.tokenizer, [[layer, keep]], method="predictor",
                       predictor=MixerPredictor(n).to(device)).eval()
    k = model.stages[0][1]
    x = torch.randn(batch, 3, bundle.image_size, bundle.image_size, device=device)
    fixed = torch.stack([torch.randperm(n, device=device)[:k].sort().values for _ in range(batch)])
    with torch.no_grad():
        tokens = run_blocks(clip.visual, embed(clip.visual, x), 0, layer)
    amp = "bf16"

    def timed(fn, precision=amp):
        nonlocal left

        def call():
            with torch.no_grad(), autocast(device, precision):
                fn()
        t = time_fn(call, device, warmup=3, repeats=repeats, budget_s=budget.share(left))
        left -= 1
        return t

    cases = {
        "unpruned": lambda xb: clip.encode_image(xb),
        "pruned_gather": lambda xb: encode_image_pruned(clip, xb, fixed[:xb.shape[0]], layer),
        "pruned_predictor": lambda xb: model.encode_image(xb),
    }
    out = {"arch": arch, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "batch": batch, "layer": layer, "kept_patches": k, "patches": n, "amp": amp if device.type == "cuda" else "fp32"}
    for name, fn in cases.items():
        flops = count_encoder_flops(lambda: fn(x[:1]))
        reset_peak_memory(device)
        t = timed(lambda: fn(x))
        mem = peak_memory_gb(device)
        out[name] = {"gflops_per_image": flops / 1e9, "seconds_per_batch": t.median, "spread": t.spread,
                     "repeats": len(t.seconds),
                     "images_per_s": t.items_per_s(batch), "tflops": t.tflops(flops * batch),
                     "percent_of_peak": t.percent_of_peak(flops * batch, peak_tflops(device))}
        if mem is not None:
            out[name]["peak_mem_gb"] = mem
    pflops = count_encoder_flops(lambda: model.predictor(tokens[:1]))
    tp = timed(lambda: model.predictor(tokens))
    u, g, p = out["unpruned"], out["pruned_gather"], out["pruned_predictor"]
    out["predictor"] = {"gflops_per_image": pflops / 1e9, "seconds_per_batch": tp.median,
                        "share_of_pruned_encoder_time": tp.median / p["seconds_per_batch"]}
    if cuda:
        t32 = timed(lambda: model.encode_image(x), "none")
        out["pruned_predictor_fp32"] = {"seconds_per_batch": t32.median, "spread": t32.spread,
                                        "images_per_s": t32.items_per_s(batch)}
    out["ratios"] = {"flops_unpruned_over_predictor": u["gflops_per_image"] / p["gflops_per_image"],
                     "flops_unpruned_over_gather": u["gflops_per_image"] / g["gflops_per_image"],
                     "speedup_gather": u["seconds_per_batch"] / g["seconds_per_batch"],
                     "speedup_predictor": u["seconds_per_batch"] / p["seconds_per_batch"]}
    return out


def report(r: dict) -> str:
    q = r["ratios"]
    return "\n".join([
        f"{r['arch']} on {r['device']} ({r['amp']}), batch {r['batch']}: {r['kept_patches']}/{r['patches']} patches "
        f"kept before block {r['layer']}",
        f"  unpruned          {r['unpruned']['images_per_s']:9.1f} img/s  {r['unpruned']['gflops_per_image']:.2f} GFLOPs",
        f"  pruned (gather)   {r['pruned_gather']['images_per_s']:9.1f} img/s  {r['pruned_gather']['gflops_per_image']:.2f} GFLOPs"
        f"  speed-up {q['speedup_gather']:.2f}x (FLOP ratio {q['flops_unpruned_over_gather']:.2f}x)",
        f"  pruned (predictor){r['pruned_predictor']['images_per_s']:9.1f} img/s  "
        f"{r['pruned_predictor']['gflops_per_image']:.2f} GFLOPs  speed-up {q['speedup_predictor']:.2f}x "
        f"(FLOP ratio {q['flops_unpruned_over_predictor']:.2f}x)",
        f"  predictor alone: {r['predictor']['gflops_per_image'] * 1e3:.2f} MFLOPs/image, "
        f"{100 * r['predictor']['share_of_pruned_encoder_time']:.1f} % of the pruned encoder's time"]
        + ([f"  pruned (predictor) without autocast (fp32) {r['pruned_predictor_fp32']['images_per_s']:9.1f} img/s"]
           if "pruned_predictor_fp32" in r else []))


def common_record(r: dict, budget_s: float | None) -> dict:
    """The pruned encoder with the predictor (the paper's model) in images/s: fp32 and bf16 on CUDA;
    on the CPU, where shared.amp runs fp32, the one fp32 run."""
    p, p32 = r["pruned_predictor"], r.get("pruned_predictor_fp32")
    what = (f"CLIP {r['arch']} image encoder, inference, {r['kept_patches']}/{r['patches']} patches kept before "
            f"block {r['layer']} by the predictor, batch {r['batch']}")
    fp32, bf16 = (p32["images_per_s"], p["images_per_s"]) if p32 else (p["images_per_s"], None)
    return summary(what, "images/s", fp32, bf16, p["tflops"], p["percent_of_peak"], p.get("peak_mem_gb"), budget_s, r)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ViT-B-16")
    p.add_argument("--batch", type=int, default=None, help="default: 256 on CUDA, 8 on CPU (2 with --budget-s)")
    p.add_argument("--keep", type=float, default=0.6)
    p.add_argument("--layer", type=int, default=3)
    p.add_argument("--repeats", type=int, default=None, help="default: 20 on CUDA, 3 on CPU")
    add_output_args(p)
    a, budget = parse_bench_args(p, argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = a.batch or (256 if device.type == "cuda" else 2 if a.budget_s is not None else 8)
    r = run(a.arch, batch, a.keep, a.layer, a.repeats or (20 if device.type == "cuda" else 3), device, budget)
    print(report(r), flush=True)
    return write_outputs(a, r, lambda: common_record(r, a.budget_s))


if __name__ == "__main__":
    main()

"""The demo's stand-in for OpenAI's CLIP: a small CLIP (``demo-clip-fmnist``: ViT 28 px / patch 7,
3 layers, width 96; text transformer 3 layers, width 96, context 24, QuickGELU; embeddings 64-d) trained from
scratch on Fashion-MNIST image/caption pairs (captions: class name in one of 8 templates).

Loss: CLIP's symmetric image-text contrastive loss with a learned temperature, except that every
pair of the same class counts as a positive (soft targets spread over them): with captions built
from 10 class names, a batch holds many pairs of one class, and treating them as negatives would
teach the model contradictions. AdamW (lr 1e-3, weight decay 0.1), linear warm-up then cosine.
The weights are saved as an open_clip state dict that ``shared.clip.load_clip`` reads.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.checkpoint import atomic_torch_save
from shared.clip.models import load_clip
from shared.clip.transforms import CLIP_MEAN, CLIP_STD
from shared.logging import progress
from projects.ptnl.demo_data import CAPTION_TEMPLATES, CLASSNAMES, pretrain_pairs

ARCH = "demo-clip-fmnist"


def _images_to_tensor(x: np.ndarray, augment: bool, g: torch.Generator) -> torch.Tensor:
    t = torch.from_numpy(x).float().div(255).unsqueeze(1)  # [B, 1, 28, 28]
    if augment:  # random shift (pad 2, crop) and horizontal flip
        t = F.pad(t, (2, 2, 2, 2))
        b = t.shape[0]
        dx, dy = torch.randint(0, 5, (2, b), generator=g)
        t = torch.stack([t[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(b)])
        flip = torch.rand(b, generator=g) < 0.5
        t[flip] = t[flip].flip(-1)
    t = t.expand(-1, 3, -1, -1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (t - mean) / std


def pretrain(out: str | Path, minutes: float = 10.0, max_steps: int = 600, batch_size: int = 128, lr: float = 1e-3,
             seed: int = 0, data_root: str | None = None, max_images: int | None = None,
             threads: int | None = 1) -> dict:
    """Train until ``minutes`` of wall time or ``max_steps``; returns a summary. ``threads``: torch
    intra-op threads (1 is fastest for this small model on a shared CPU)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    bundle = load_clip(ARCH, None)
    model, tok = bundle.model, bundle.tokenizer
    model.train()
    x_all, y_all = pretrain_pairs(data_root)
    if max_images:
        x_all, y_all = x_all[:max_images], y_all[:max_images]
    captions = [[t.format(n.replace("_", " ")) for t in CAPTION_TEMPLATES] for n in CLASSNAMES]
    cap_tokens = torch.stack([tok(c) for c in captions])  # [C, T, L]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
    warmup = min(100, max_steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, max_steps) / max_steps)))
    t0, step, losses = time.time(), 0, []
    bar = progress(total=max_steps, desc="pretrain demo CLIP")
    while step < max_steps and time.time() - t0 < minutes * 60:
        idx = rng.choice(len(x_all), size=batch_size, replace=False)
        y = torch.from_numpy(y_all[idx])
        images = _images_to_tensor(x_all[idx], True, g)
        tmpl = torch.randint(0, len(CAPTION_TEMPLATES), (batch_size,), generator=g)
        img = F.normalize(model.encode_image(images), dim=-1)
        # the captions are class x template: encode the unique ones once per step, then index
        txt = F.normalize(model.encode_text(cap_tokens.flatten(0, 1)), dim=-1).view(*cap_tokens.shape[:2], -1)
        txt = txt[y, tmpl]
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
        same = (y[:, None] == y[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-25:]):.3f}", refresh=False)
    bar.close()
    model.eval()
    atomic_torch_save(model.state_dict(), out)
    return {"steps": step, "seconds": time.time() - t0, "final_loss": float(np.mean(losses[-25:])),
            "images_seen": step * batch_size, "path": str(out)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--max-steps", type=int, default=600)
    a = p.parse_args()
    print(pretrain(a.out, a.minutes, a.max_steps))

"""Loading CLIP through open_clip (3.x), and the text tower run from token embeddings.

    bundle = load_clip("RN50", "openai")              # hub tag (online), QuickGELU forced
    bundle = load_clip("RN50", "/weights/RN50.pt")    # a local OpenAI JIT archive or state dict
    bundle = load_clip("tiny-clip-vit", None)         # random init (tests), configs in model_configs/

The open_clip traps this module handles (open_clip_torch 3.3.0):
- The built-in ``RN50`` / ``ViT-B-16`` configs have no ``quick_gelu``, and the factory no longer
  special-cases the ``openai`` tag: ``create_model('RN50', pretrained='openai')`` silently builds
  nn.GELU, while OpenAI trained with QuickGELU. ``quick_gelu="auto"`` forces QuickGELU whenever
  OpenAI weights are loaded (the tag, a JIT archive, or an OpenAI-architecture state dict).
- An OpenAI JIT archive (``RN50.pt`` as OpenAI distributes it) cannot go through
  ``create_model(pretrained=path)`` (weights-only torch.load); it is rebuilt with
  ``open_clip.load_openai_model`` instead.
- The text transformer is batch-first and needs ``attn_mask=model.attn_mask`` passed explicitly:
  without it attention is bidirectional, with no error (``encode_text_embeddings`` below).
"""
from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import torch
import torch.nn as nn

from shared.clip.transforms import clip_test_transform

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(CONFIG_DIR)  # tiny-clip-vit, tiny-clip-rn (tests), demo-clip-fmnist (demos)

# Architectures OpenAI released (open_clip names); their weights were trained with QuickGELU.
OPENAI_ARCHS = {"RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"}


@dataclass
class ClipBundle:
    model: nn.Module             # open_clip CLIP, eval mode
    preprocess: Callable         # CLIP's test transform (resize short side, centre crop, normalise)
    tokenizer: Callable          # list[str] -> LongTensor [N, context_length]
    name: str
    image_size: int
    source: str                  # where the weights came from


def canonical_name(name: str) -> str:
    """OpenAI's names ('ViT-B/16') to open_clip's ('ViT-B-16')."""
    return name.replace("/", "-")


def image_size_of(model: nn.Module) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _is_jit_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_clip(name: str, pretrained: str | None = None, precision: str = "fp32",
              device: str | torch.device = "cpu", quick_gelu: bool | str = "auto",
              cache_dir: str | None = None) -> ClipBundle:
    """A frozen-ready CLIP (eval mode) with its test transform and tokenizer.

    pretrained: None (random init), an open_clip tag ('openai', 'laion2b_s34b_b79k', ...), or a local
    file (OpenAI JIT archive, OpenAI or open_clip state dict, .safetensors).
    precision: 'fp32' | 'fp16' (OpenAI/CoOp style: weights in half precision) | 'bf16'.
    """
    name = canonical_name(name)
    if open_clip.get_model_config(name) is None:
        raise ValueError(f"unknown CLIP architecture {name!r}; known: {', '.join(open_clip.list_models())}")
    device = torch.device(device)
    openai_weights = False
    if pretrained is not None and pretrained != "":
        path = Path(os.path.expanduser(str(pretrained)))
        looks_like_path = os.sep in str(pretrained) or path.suffix in (".pt", ".pth", ".bin", ".safetensors")
        if looks_like_path and not path.is_file():
            raise FileNotFoundError(f"CLIP weights file not found: {path}")
        openai_weights = pretrained == "openai" or (path.is_file() and name in OPENAI_ARCHS)
        if path.is_file() and _is_jit_archive(path):
            if quick_gelu is False:
                log.warning("quick_gelu=False ignored: OpenAI JIT weights are always rebuilt with QuickGELU")
            model = open_clip.load_openai_model(str(path), precision=precision, device=device)
            source = f"OpenAI JIT archive {path}"
        else:
            qg = openai_weights if quick_gelu == "auto" else bool(quick_gelu)
            model = open_clip.create_model(name, pretrained=str(path) if path.is_file() else pretrained,
                                           precision=precision, device=device, force_quick_gelu=qg,
                                           cache_dir=cache_dir, weights_only=False)
            source = f"{pretrained} (quick_gelu={qg})"
    else:
        qg = bool(quick_gelu) if quick_gelu != "auto" else False  # tiny configs carry quick_gelu themselves
        model = open_clip.create_model(name, pretrained=None, precision=precision, device=device,
                                       force_quick_gelu=qg)
        source = "random init"
    model.eval()
    size = image_size_of(model)
    return ClipBundle(model=model, preprocess=clip_test_transform(size), tokenizer=open_clip.get_tokenizer(name),
                      name=name, image_size=size, source=source)


def text_dtype(model: nn.Module) -> torch.dtype:
    return model.transformer.get_cast_dtype()


def encode_text_embeddings(model: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's text tower from token embeddings ``x`` [N, L, width] (e.g. with learned context vectors
    in place of some tokens): positional embedding, the transformer *with its causal mask*
    (batch-first in open_clip 3.x), ln_final, the feature at the EOT token (argmax of ``tokens``),
    the projection. With ``x = model.token_embedding(tokens)`` this equals ``model.encode_text(tokens)``."""
    dtype = text_dtype(model)
    x = x.to(dtype) + model.positional_embedding.to(dtype)
    if not getattr(model.transformer, "batch_first", True):
        x = x.transpose(0, 1)
    x = model.transformer(x, attn_mask=model.attn_mask)
    if not getattr(model.transformer, "batch_first", True):
        x = x.transpose(0, 1)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def freeze(model: nn.Module) -> nn.Module:
    """No parameter of ``model`` requires grad, and it stays in eval mode (BatchNorm statistics of
    RN backbones are never updated, as in CoOp where only the prompt learner is in train mode)."""
    model.requires_grad_(False)
    model.eval()
    return model

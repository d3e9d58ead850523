"""Phase III: learnable visual and text tokens, IVLP-style (independent vision-language prompting, as
MaPLe's ``independentVL`` trainer the official repo inherits: 2 + 2 context tokens, depth 12/12).

- Visual: ``n_vis`` tokens appended after the patch tokens (after the positional embedding, before
  ln_pre), N(0, 0.02^2); at blocks 1..depth-1 the last ``n_vis`` tokens are replaced by that block's
  own learnable tokens (VPT-deep). They are kept at every pruning stage (never pruned).
- Text: the prompt "{ctx_init} {class name}." (ctx_init "a photo of a"), whose first ``n_txt``
  word tokens (after SOS) are learnable, initialised from their embeddings; at blocks 1..depth-1
  the tokens at positions 1..n_txt are replaced by that block's learnable tokens, N(0, 0.02^2).
The CLIP weights stay frozen.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.clip.models import text_dtype
from shared.clip.templates import clean_classname


class VisualPrompts(nn.Module):
    def __init__(self, width: int, n_ctx: int = 2, depth: int = 12, std: float = 0.02):
        super().__init__()
        if n_ctx < 1 or depth < 1:
            raise ValueError(f"visual prompts need n_ctx >= 1 and depth >= 1, got {n_ctx}, {depth}")
        self.shallow = nn.Parameter(torch.randn(n_ctx, width) * std)
        self.deep = nn.ParameterList([nn.Parameter(torch.randn(n_ctx, width) * std) for _ in range(depth - 1)])

    def deep_list(self) -> list[torch.Tensor]:
        return list(self.deep)


class TextPrompts(nn.Module):
    def __init__(self, clip_model: nn.Module, tokenizer, classnames: list[str], n_ctx: int = 2,
                 ctx_init: str = "a photo of a", depth: int = 12, std: float = 0.02):
        super().__init__()
        embed = clip_model.token_embedding
        dtype = text_dtype(clip_model)
        device = embed.weight.device
        width = clip_model.ln_final.weight.shape[0]
        ctx_init = ctx_init.replace("_", " ").strip()
        if ctx_init:
            tok = tokenizer([ctx_init]).to(device)
            if int(tok.argmax(-1)) - 1 < n_ctx:
                raise ValueError(f"ctx_init {ctx_init!r} has fewer than n_ctx = {n_ctx} tokens")
            with torch.no_grad():
                ctx = embed(tok)[0, 1:1 + n_ctx].to(dtype).clone()
            prefix = ctx_init
        else:
            ctx = torch.randn(n_ctx, width, dtype=dtype, device=device) * std
            prefix = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(ctx)
        self.deep = nn.ParameterList([nn.Parameter(torch.randn(n_ctx, width) * std) for _ in range(depth - 1)])
        self.n_ctx = n_ctx
        tokens = tokenizer([f"{prefix} {clean_classname(c)}." for c in classnames]).to(device)
        if bool((tokens[:, -1] != 0).any()):
            raise ValueError(f"a prompt is longer than the context length {tokens.shape[1]}")
        with torch.no_grad():
            emb = embed(tokens).to(dtype)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("prefix", emb[:, :1], persistent=False)
        self.register_buffer("suffix", emb[:, 1 + n_ctx:], persistent=False)

    def forward(self, clip_model: nn.Module) -> torch.Tensor:
        """[C, E] L2-normalised class embeddings (fp32) through the text tower with deep prompts."""
        m = clip_model
        dtype = text_dtype(m)
        c = self.prefix.shape[0]
        x = torch.cat([self.prefix, self.ctx.to(dtype).unsqueeze(0).expand(c, -1, -1), self.suffix], 1)
        x = x + m.positional_embedding.to(dtype)
        blocks = m.transformer.resblocks
        for i, blk in enumerate(blocks):
            if 1 <= i <= len(self.deep):
                p = self.deep[i - 1].to(dtype).unsqueeze(0).expand(c, -1, -1)
                x = torch.cat([x[:, :1], p, x[:, 1 + self.n_ctx:]], 1)
            x = blk(x, attn_mask=m.attn_mask)
        x = m.ln_final(x)
        x = x[torch.arange(c, device=x.device), self.tokens.argmax(-1)]
        proj = m.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else (x @ proj if proj is not None else x)
        return F.normalize(x.float(), dim=-1)

"""CoOp's prompt learner on a frozen open_clip CLIP, as PTNL (and UPL) train it.

Prompt of class c: [SOS, p_1 .. p_M, <class-name tokens>, ".", EOT, pad...]; only p_1..p_M (the
context vectors, shared by all classes unless ``csc``) are learned. They start as N(0, 0.02^2)
with the filler text "X X ... X" (M times) for tokenisation, or as the token embeddings of
``ctx_init`` (e.g. "a photo of a"). The text tower runs with its causal mask (shared.clip.models).

Memory: the image tower runs under ``torch.no_grad`` (nothing kept for backward); the text tower's
weights are frozen, so autograd keeps only what the gradient w.r.t. the context vectors needs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.clip.datasets import SPECS, resolve_name
from shared.clip.models import encode_text_embeddings, freeze, load_clip, text_dtype
from shared.clip.templates import clean_classname
from shared.clip.zeroshot import fp32_logits
from projects.ptnl.data import build_dataset


class PromptLearner(nn.Module):
    def __init__(self, clip_model: nn.Module, tokenizer, classnames: list[str], n_ctx: int = 16, ctx_init: str = "",
                 csc: bool = False, class_token_position: str = "end", init_std: float = 0.02):
        super().__init__()
        if class_token_position not in ("end", "middle", "front"):
            raise ValueError(f"class_token_position must be end, middle or front, got {class_token_position!r}")
        dtype = text_dtype(clip_model)
        ctx_dim = clip_model.ln_final.weight.shape[0]
        embed = clip_model.token_embedding
        device = embed.weight.device
        n_cls = len(classnames)
        ctx_init = (ctx_init or "").replace("_", " ").strip()
        if ctx_init:
            tok = tokenizer([ctx_init]).to(device)
            n_ctx = int(tok.argmax(-1)) - 1  # the words' BPE tokens between SOS and EOT
            with torch.no_grad():
                ctx = embed(tok)[0, 1:1 + n_ctx].to(dtype)
            if csc:
                ctx = ctx.unsqueeze(0).repeat(n_cls, 1, 1)
            prefix_text = ctx_init
        else:
            ctx = torch.empty((n_cls, n_ctx, ctx_dim) if csc else (n_ctx, ctx_dim), dtype=dtype, device=device)
            nn.init.normal_(ctx, std=init_std)
            prefix_text = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(ctx)
        self.n_ctx, self.n_cls, self.csc, self.position = n_ctx, n_cls, csc, class_token_position
        self.classnames = [clean_classname(c) for c in classnames]
        prompts = [f"{prefix_text} {name}." for name in self.classnames]
        tokens = tokenizer(prompts).to(device)
        eot = tokens.argmax(-1)
        if bool((tokens[:, -1] != 0).any()):
            raise ValueError(f"a prompt is longer than the context length {tokens.shape[1]}: truncated")
        with torch.no_grad():
            emb = embed(tokens).to(dtype)
        self.register_buffer("tokenized_prompts", tokens, persistent=False)
        self.register_buffer("token_prefix", emb[:, :1], persistent=False)           # SOS
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx:], persistent=False)   # class tokens, ".", EOT, pad
        self.name_lens = (eot - 2 - n_ctx).tolist()  # tokens of the class name (between ctx and ".")

    def forward(self) -> torch.Tensor:
        ctx = self.ctx if self.csc else self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        out = []
        half = self.n_ctx // 2
        for i, n in enumerate(self.name_lens):
            name, rest = suffix[i:i + 1, :n], suffix[i:i + 1, n:]
            if self.position == "middle":
                out.append(torch.cat([prefix[i:i + 1], ctx[i:i + 1, :half], name, ctx[i:i + 1, half:], rest], dim=1))
            else:
                out.append(torch.cat([prefix[i:i + 1], name, ctx[i:i + 1], rest], dim=1))
        return torch.cat(out, dim=0)


class CoOpCLIP(nn.Module):
    """Frozen CLIP + prompt learner. ``forward(images)`` -> logits [B, C] = CLIP's logit scale
    (frozen, ~100 for OpenAI weights) times the cosine of image and prompt features."""

    def __init__(self, clip_model: nn.Module, tokenizer, classnames: list[str], **prompt_kw):
        super().__init__()
        self.clip = freeze(clip_model)
        self.prompt_learner = PromptLearner(clip_model, tokenizer, classnames, **prompt_kw)
        self.image_dtype = next(clip_model.visual.parameters()).dtype

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen: BatchNorm statistics and dropout stay in inference mode
        return self

    @property
    def dtype(self) -> torch.dtype:
        return text_dtype(self.clip)

    def text_features(self) -> torch.Tensor:
        prompts = self.prompt_learner()
        feats = encode_text_embeddings(self.clip, prompts, self.prompt_learner.tokenized_prompts)
        return F.normalize(feats.float(), dim=-1)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(self.clip.encode_image(images.to(self.image_dtype)).float(), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.detach().float().exp()

    def forward(self, images: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        """The towers run in the caller's autocast; the logits are computed in fp32 outside it."""
        img = self.image_features(images)
        txt = self.text_features() if text_features is None else text_features
        return fp32_logits(img, txt, self.logit_scale())


def _config_classnames(cfg) -> list[str]:
    """Class names when no dataset is at hand (building a config's model for a check): the demo's and
    the synthetic set's are known; a CoOp dataset gets generic names ("class 0", ...), one per class of its spec
    (the prompt learner's shapes and trainable part do not depend on the words)."""
    from shared.clip import demo_clip, synthetic

    name = str(cfg.data.dataset)
    known = {"FashionMNIST": demo_clip.CLASSNAMES, "Synth": synthetic.CLASSES}
    if name in known:
        return list(known[name])
    spec = SPECS.get(resolve_name(name))
    if spec is None or spec.num_classes is None:
        return list(build_dataset(cfg).classnames)
    return [f"class {i}" for i in range(spec.num_classes)]


def build_model(cfg, classnames: list[str] | None = None, bundle=None, device: str | torch.device = "cpu") -> CoOpCLIP:
    """The CoOp model the config describes: its CLIP (``clip.arch`` with ``clip.pretrained``; random
    init when that is null), frozen, with the prompt learner of ``prompt.*`` for ``classnames`` (the
    dataset's; when not given, see ``_config_classnames``)."""
    device = torch.device(device)
    if bundle is None:
        c = cfg.clip
        bundle = load_clip(c.arch, c.pretrained, precision=c.precision, device=device, quick_gelu=c.quick_gelu,
                           cache_dir=c.cache_dir)
    names = list(classnames) if classnames is not None else _config_classnames(cfg)
    p = cfg.prompt
    return CoOpCLIP(bundle.model, bundle.tokenizer, names, n_ctx=p.n_ctx, ctx_init=p.ctx_init, csc=p.csc,
                    class_token_position=p.class_token_position, init_std=p.init_std).to(device)

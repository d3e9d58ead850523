"""The pruned CLIP classifier: a frozen open_clip CLIP whose image tower drops patch tokens at the
configured stages, chosen by one of the methods below, optionally with IVLP visual/text tokens.

methods: ``none`` (unpruned), ``golden`` (the oracle: each image's golden ranking, given per batch),
``predictor`` (the Mixer predictor's scores at the first stage), ``random``, ``evit``, ``tome``
(single stage; see baselines.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.clip.models import freeze
from shared.clip.zeroshot import text_classifier
from projects.patch_ranking.data import load_cfg_clip
from projects.patch_ranking.baselines import encode_image_evit, encode_image_tome
from projects.patch_ranking.predictor import MixerPredictor, TimmFeatures
from projects.patch_ranking.prompts import TextPrompts, VisualPrompts
from projects.patch_ranking.pruning import (check_vit, depth, encode_image_staged, num_patches, order_scorer,
                                            parse_stages, random_scorer)

METHODS = ("none", "golden", "predictor", "random", "evit", "tome")


class PrunedCLIP(nn.Module):
    def __init__(self, clip_model: nn.Module, tokenizer, stages, method: str = "predictor",
                 predictor: MixerPredictor | None = None, timm_features: TimmFeatures | None = None,
                 seed: int = 0, tome_proportional: bool = True):
        super().__init__()
        check_vit(clip_model.visual)
        self.clip = freeze(clip_model)
        self.tokenizer = tokenizer
        self.n = num_patches(clip_model.visual)
        self.stages = parse_stages(stages, self.n, depth(clip_model.visual))
        if not self.stages:
            raise ValueError("give at least one pruning stage [layer, keep]")
        self.predictor = predictor
        self.timm_features = timm_features
        self.visual_prompts: VisualPrompts | None = None
        self.text_prompts: TextPrompts | None = None
        self.register_buffer("classifier", torch.zeros(0), persistent=False)
        self.generator = torch.Generator().manual_seed(seed)
        self.tome_proportional = tome_proportional
        self.method = "none"
        self.set_method(method)

    # -- configuration ---------------------------------------------------------------------------
    def set_method(self, method: str, keep: float | int | None = None) -> "PrunedCLIP":
        """Switch the pruning method (and, with ``keep``, the kept count/ratio of a single stage)."""
        if method not in METHODS:
            raise ValueError(f"pruning method must be one of {METHODS}, got {method!r}")
        if keep is not None:
            if len(self.stages) != 1:
                raise ValueError("set_method(keep=...) changes a single-stage configuration only")
            self.stages = parse_stages([[self.stages[0][0], keep]], self.n, depth(self.clip.visual))
        if method == "predictor" and self.predictor is None:
            raise ValueError("method 'predictor' needs a trained predictor (predictor.checkpoint)")
        if method in ("evit", "tome") and len(self.stages) != 1:
            raise ValueError(f"{method} is implemented for a single pruning stage; got {self.stages}")
        self.method = method
        return self

    def set_classes(self, classnames: list[str], template: str) -> None:
        dev = self.clip.logit_scale.device
        self.classifier = text_classifier(self.clip, self.tokenizer, classnames, template, device=dev)
        self.classnames, self.template = list(classnames), template

    def add_prompts(self, n_vis: int = 2, n_txt: int = 2, depth_vis: int = 12, depth_txt: int = 12,
                    ctx_init: str = "a photo of a") -> None:
        if not getattr(self, "classnames", None):
            raise RuntimeError("set_classes before add_prompts (the text prompts are per class)")
        dev = self.clip.logit_scale.device
        d = depth(self.clip.visual)
        self.visual_prompts = VisualPrompts(self.clip.visual.conv1.weight.shape[0], n_vis, min(depth_vis, d)).to(dev)
        self.text_prompts = TextPrompts(self.clip, self.tokenizer, self.classnames, n_txt, ctx_init,
                                        min(depth_txt, len(self.clip.transformer.resblocks))).to(dev)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()
        if self.predictor is not None:
            self.predictor.eval()
        return self

    @property
    def layer(self) -> int:
        return self.stages[0][0]

    # -- forward ---------------------------------------------------------------------------------
    def predictor_scores(self, images: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        if self.timm_features is not None:
            tokens = self.timm_features(images.to(next(self.timm_features.parameters()).dtype))
        return self.predictor(tokens)

    def encode_image(self, images: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        """Image features as ``encode_image`` returns them (not normalised)."""
        m = self.method
        keep = self.stages[0][1]
        if m in ("evit", "tome") and self.visual_prompts is not None:
            raise ValueError(f"{m} is a baseline without learned tokens")
        if m == "evit":
            return encode_image_evit(self.clip, images, keep, self.layer)
        if m == "tome":
            return encode_image_tome(self.clip, images, keep, self.layer, self.tome_proportional)
        stages = self.stages
        if m == "none":
            stages = [(self.layer, self.n)]
            scorer = lambda x, ids: torch.zeros(ids.shape[0], self.n, device=x.device)  # noqa: E731
        elif m == "golden":
            if order is None:
                raise ValueError("method 'golden' needs the images' golden rankings (order [B, N])")
            scorer = order_scorer(order)
        elif m == "random":
            scorer = random_scorer(self.generator, self.n)
        else:
            cache = {}

            def scorer(x, ids):
                if "s" not in cache:  # scored once, at the first stage, on the full token set
                    cache["s"] = self.predictor_scores(images, x)
                return cache["s"]
        return encode_image_staged(self.clip, images, stages, scorer, self.visual_prompts)

    def image_features(self, images: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.encode_image(images, order).float(), dim=-1)

    def text_features(self) -> torch.Tensor:
        if self.text_prompts is not None:
            return self.text_prompts(self.clip)
        if self.classifier.numel() == 0:
            raise RuntimeError("call set_classes(classnames, template) first")
        return self.classifier

    def forward(self, images: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.clip.logit_scale.detach().float().exp()
        return scale * self.image_features(images, order) @ self.text_features().t()


def load_predictor(predictor: nn.Module, path, rebuild: str | None = None) -> None:
    """Predictor weights from ``path`` through ``shared.checkpoint.load_weights``; a file that does not fit
    this predictor (another patch count or pool width) is an error naming it, and, for a run's own
    intermediate file, how to rebuild it (``rebuild``)."""
    from shared.checkpoint import CheckpointError, load_weights

    state = load_weights(path, project="patch_ranking")
    try:
        predictor.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(f"{path} does not fit this predictor ({predictor.num_patches} patches, pool width "
                              f"{predictor.pool_dim}): {first}"
                              + (f"; {rebuild}" if rebuild else "")) from None


def build_model(cfg, classnames: list[str] | None = None, device: torch.device | str = "cpu") -> PrunedCLIP:
    """The model a config describes: CLIP (``clip.pretrained``: null = random init), the pruning stages,
    the predictor (weights from ``predictor.checkpoint`` if set), the method; with ``classnames``,
    the zero-shot classifier of ``data.template``."""
    bundle = load_cfg_clip(cfg, device)
    n = num_patches(bundle.model.visual)
    p = cfg.predictor
    predictor = MixerPredictor(n, int(p.pool_dim)).to(device)
    timm_features = None
    if p.features == "timm":
        timm_features = TimmFeatures(p.timm_model, p.timm_pretrained).to(device)
    elif p.features != "own":
        raise ValueError(f"predictor.features must be own or timm, got {p.features!r}")
    if p.checkpoint:
        load_predictor(predictor, p.checkpoint)
    model = PrunedCLIP(bundle.model, bundle.tokenizer, cfg.prune.stages, method="none", predictor=predictor,
                       timm_features=timm_features, seed=int(cfg.run.seed),
                       tome_proportional=bool(cfg.prune.tome_proportional)).to(device)
    model.set_method(cfg.prune.method)
    model.image_size = bundle.image_size
    model.bundle_name, model.bundle_source = bundle.name, bundle.source
    if classnames is not None:
        model.set_classes(classnames, cfg.data.template or "a photo of a {}.")
    return model

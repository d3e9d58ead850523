"""Zero-shot CLIP classification with a per-dataset template (a single template, as CoOp/UPL/PTNL;
a list of templates is averaged as in CLIP's prompt ensembling)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from shared.amp import autocast
from shared.clip.templates import clean_classname
from shared.logging import progress


@torch.no_grad()
def text_classifier(model, tokenizer, classnames: list[str], templates: str | list[str],
                    device: torch.device | str = "cpu", batch_size: int = 256) -> torch.Tensor:
    """[C, D] L2-normalised class embeddings (fp32); several templates: mean of normalised, renormalised."""
    templates = [templates] if isinstance(templates, str) else list(templates)
    device = torch.device(device)
    out = []
    for name in classnames:
        texts = [t.format(clean_classname(name)) for t in templates]
        feats = []
        for i in range(0, len(texts), batch_size):
            tok = tokenizer(texts[i:i + batch_size]).to(device)
            feats.append(F.normalize(model.encode_text(tok).float(), dim=-1))
        emb = torch.cat(feats).mean(0)
        out.append(F.normalize(emb, dim=-1))
    return torch.stack(out)


@torch.no_grad()
def encode_images(model, loader: DataLoader, device: torch.device | str = "cpu", amp: str | None = None,
                  normalize: bool = True, desc: str = "encode") -> tuple[torch.Tensor, torch.Tensor]:
    """Image features (fp32, CPU) and true labels of every item of ``loader`` (dict batches with
    'image' and 'true_label' or 'label')."""
    device = torch.device(device)
    feats, labels = [], []
    for batch in progress(loader, desc=desc):
        x = batch["image"].to(device, non_blocking=True)
        with autocast(device, amp):
            f = model.encode_image(x.to(next(model.parameters()).dtype))
        f = f.float()
        feats.append(F.normalize(f, dim=-1).cpu() if normalize else f.cpu())
        labels.append(torch.as_tensor(batch.get("true_label", batch.get("label"))))
    return torch.cat(feats), torch.cat(labels)


def logit_scale(model) -> float:
    return float(model.logit_scale.detach().float().exp())


def fp32_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale) -> torch.Tensor:
    """CLIP's logits ``scale * img @ txt.T`` in fp32, outside any autocast region the caller is in
    (the features are L2-normalised; a bf16 product would round the cosines to 3 digits)."""
    with torch.autocast(image_features.device.type, enabled=False):
        scale = scale.float() if torch.is_tensor(scale) else scale
        return scale * image_features.float() @ text_features.float().t().to(image_features.device)


def zero_shot_logits(image_features: torch.Tensor, classifier: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale`` * cosine similarity in fp32; features must be L2-normalised."""
    return fp32_logits(image_features, classifier, scale)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1).cpu() == labels.cpu()).float().mean())

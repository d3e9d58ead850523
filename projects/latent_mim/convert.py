"""Our checkpoints, or the released official one, to a timm ``VisionTransformer`` state dict.

    python -m projects.latent_mim.convert CKPT OUT.pth [--source online|target] [--arch vit_base]

Key mapping (encoder -> timm): ``embed.proj.weight`` (D, p*p*C) in (row, col, channel) order ->
``patch_embed.proj.weight`` (D, C, p, p); ``embed.proj.bias`` -> ``patch_embed.proj.bias``;
``pos_embed.pos_embeds`` (1 + N, D, zero CLS row, the official 14/13-spaced grid) is copied as
``pos_embed`` (1, 1 + N, D), never regenerated; ``cls_token``, ``blocks.*`` and ``norm.*`` keep
their names. The latent projector (``head.*``) is dropped: a timm head is task-specific.

Accepted inputs: a checkpoint of ours (``{"model": state_dict}``: keys ``encoder.*`` /
``target_encoder.*``), or the official release (``{"state_dict": ...}`` saved from DDP: keys
``module.encoder.*``; its projector is ``head.linear0/norm0/...``, dropped the same way).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

PREFIXES = {"online": ("encoder.",), "target": ("target_encoder.",)}


def encoder_state(ckpt: dict, source: str = "online") -> dict[str, torch.Tensor]:
    """The encoder's own keys (prefix stripped) from one of the accepted checkpoint formats."""
    if source not in PREFIXES:
        raise ValueError(f"source must be online or target, got {source!r}")
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError("not a checkpoint: expected a dict with 'model' (ours) or 'state_dict' (official)")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    prefix = PREFIXES[source][0]
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise KeyError(f"no '{prefix}*' keys in the checkpoint (first keys: {list(state)[:5]})")
    return out


def load_encoder_state(path: str | Path, source: str = "online") -> dict[str, torch.Tensor]:
    """The encoder's keys from a checkpoint file of ours (project-checked) or the official release, read
    through ``shared.checkpoint.load_weights`` (weights-only where the file allows); errors name the file."""
    from shared.checkpoint import CheckpointError, load_weights

    state = load_weights(path, project="latent_mim")
    try:
        return encoder_state({"model": state}, source)
    except KeyError as e:
        raise CheckpointError(f"{path} is not a Latent MIM / MAE checkpoint: {e.args[0]}") from None


def to_timm(enc: dict[str, torch.Tensor], in_chans: int | None = None) -> dict[str, torch.Tensor]:
    """Encoder keys -> timm VisionTransformer keys (see the module docstring)."""
    for need in ("embed.proj.weight", "pos_embed.pos_embeds", "cls_token", "norm.weight"):
        if need not in enc:
            raise KeyError(f"encoder state has no {need!r}: not a Latent MIM encoder")
    w = enc["embed.proj.weight"]
    dim, flat = w.shape
    if in_chans is None:
        in_chans = 3 if int(round((flat / 3) ** 0.5)) ** 2 * 3 == flat else 1
    p = int(round((flat / in_chans) ** 0.5))
    if p * p * in_chans != flat:
        raise ValueError(f"patch embedding of width {flat} is not p*p*{in_chans}")
    out = {"patch_embed.proj.weight": w.reshape(dim, p, p, in_chans).permute(0, 3, 1, 2).contiguous(),
           "patch_embed.proj.bias": enc["embed.proj.bias"],
           "pos_embed": enc["pos_embed.pos_embeds"].unsqueeze(0).clone(),
           "cls_token": enc["cls_token"]}
    for k, v in enc.items():
        if k.startswith("blocks.") or k.startswith("norm."):
            out[k] = v
    return out


def timm_vit(state: dict[str, torch.Tensor], num_classes: int = 0, **kwargs):
    """A timm ViT shaped after a converted state dict, with the weights loaded (strict for the trunk)."""
    from timm.models.vision_transformer import VisionTransformer

    dim = state["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    p, c = state["patch_embed.proj.weight"].shape[-1], state["patch_embed.proj.weight"].shape[1]
    n = state["pos_embed"].shape[1] - 1
    grid = int(round(n ** 0.5))
    heads = kwargs.pop("num_heads", max(1, dim // 64))
    model = VisionTransformer(img_size=grid * p, patch_size=p, in_chans=c, num_classes=num_classes, embed_dim=dim,
                              depth=depth, num_heads=heads, qkv_bias=True, **kwargs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    trunk_missing = [k for k in missing if not k.startswith(("head.", "fc_norm."))]
    if trunk_missing or unexpected:
        raise KeyError(f"timm ViT does not match the converted state: missing {trunk_missing}, unexpected {unexpected}")
    return model


def check_output(src: Path, out: Path, force: bool = False) -> None:
    """The output must not replace its input, nor land among a run's checkpoints (where resume would
    read it), unless ``force``."""
    if out.resolve() == src.resolve():
        raise ValueError(f"the output {out} is the input checkpoint: give another path")
    if not force and out.resolve().parent.name == "checkpoints":
        raise ValueError(f"the output {out} lies in a run's checkpoints/ folder, where resuming would find it: "
                         "write it elsewhere, or pass --force")


def main(argv=None) -> None:
    from shared.checkpoint import atomic_torch_save

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--source", default="online", choices=sorted(PREFIXES))
    p.add_argument("--in-chans", type=int, default=None)
    p.add_argument("--force", action="store_true", help="allow an output inside a checkpoints/ folder")
    a = p.parse_args(argv)
    src, out = Path(a.checkpoint), Path(a.out)
    check_output(src, out, a.force)
    state = to_timm(load_encoder_state(src, a.source), a.in_chans)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, out)
    print(f"wrote {len(state)} tensors to {out}")


if __name__ == "__main__":
    main()

"""``build_model(cfg)``: the framework a config describes (the networks live in frameworks.py, vit.py, heads.py)."""
from __future__ import annotations

from projects.accel_ssl.frameworks import DINO, Framework, MoCoV3, SimCLR
from projects.accel_ssl.vit import SeqCompressViT


def build_model(cfg) -> Framework:
    """The framework a config describes, randomly initialised (seed the global RNG first)."""
    m = cfg.model
    name = cfg.method.name
    pos = m.pos_embed if m.pos_embed != "auto" else ("learn" if name == "dino" else "sincos")
    freeze = m.freeze_patch_embed if m.freeze_patch_embed != "auto" else name == "mocov3"
    backbone = SeqCompressViT(m.arch, m.img_size, m.patch_size, m.in_chans, pos_embed=pos, freeze_patch_embed=freeze,
                              drop_path_rate=m.drop_path_rate, moco_init=name != "dino")
    meth = cfg.method
    if name == "mocov3":
        return MoCoV3(backbone, meth.hidden_dim, meth.out_dim, meth.tau, meth.gather_negatives)
    if name == "simclr":
        return SimCLR(backbone, meth.hidden_dim, meth.out_dim, meth.tau, meth.gather_negatives)
    if name == "dino":
        return DINO(backbone, meth.out_dim, meth.hidden_dim, meth.bottleneck_dim, meth.norm_last_layer,
                    meth.student_temp, meth.center_momentum, cfg.data.n_local_crops, meth.use_bn_in_head)
    raise ValueError(f"method.name must be mocov3, simclr or dino, got {name!r}")

"""MoCo v3, SimCLR and DINO on a SeqCompressViT, each taking a compression Setting per step.

Every framework exposes ``loss(views, setting, gens, **sched) -> (loss, stats)``, the parameters
to optimise, ``update_target(momentum)`` where it has a momentum branch, ``encoder()`` (the
backbone evaluated by k-NN / linear probe) and ``step_flops(view_sizes, setting)``: the trunk's
training FLOPs per image (3x forward for the online branch, 1x for the target branch).
"""
from __future__ import annotations

import copy

import torch
from timm.layers import DropPath
from torch import nn

from projects.accel_ssl.heads import DINOHead, moco_mlp
from projects.accel_ssl.losses import dino_loss, mocov3_loss, nt_xent_loss, update_center
from projects.accel_ssl.vit import SeqCompressViT, dropout_noise, vit_forward_flops


def _frozen_copy(m: nn.Module, stochastic_depth: bool = True) -> nn.Module:
    c = copy.deepcopy(m)
    c.requires_grad_(False)
    if not stochastic_depth:  # DINO's teacher is built without drop path (only the student has it)
        for block in c.modules():
            for name, child in list(block.named_children()):
                if isinstance(child, DropPath):
                    setattr(block, name, nn.Identity())
    return c


class Framework(nn.Module):
    online_views: int = 2  # views the online branch sees (DINO: all crops)
    target_views: int = 2

    def __init__(self, backbone: SeqCompressViT):
        super().__init__()
        self.backbone = backbone

    def encoder(self) -> SeqCompressViT:
        return self.backbone

    def forward(self, views, setting, gens, **sched):
        """The training loss (so that DistributedDataParallel sees the call and syncs gradients)."""
        return self.loss(views, setting, gens, **sched)

    def _vit_flops(self, size: int, patch: int | None, keep: float) -> float:
        b = self.backbone
        dim, depth = b.embed_dim, len(b.vit.blocks)
        return vit_forward_flops(b.num_tokens(size, patch, keep), dim, depth, patch or b.base_patch, b.in_chans)

    def step_flops(self, view_sizes: list[int], setting) -> float:
        total = 0.0
        for v, size in enumerate(view_sizes[: self.online_views]):
            total += 3 * self._vit_flops(size, setting.patch, setting.keep("online", v) if v < 2 else 1.0)
        for v, size in enumerate(view_sizes[: self.target_views]):
            total += self._vit_flops(size, setting.patch, setting.keep("target", v))
        return total

    def update_target(self, momentum: float) -> None:
        pass

    def noise_slots(self, n_views: int, setting) -> dict[int, tuple[int, float]]:
        """{generator index: (view index, keep ratio)} of every backbone call in ``loss``."""
        return {i: (i, setting.keep("online", i)) for i in range(min(n_views, self.online_views))}

    def draw_noise(self, views, setting, gens) -> list:
        """``gens`` with the token-dropout noise of every compressed call drawn (on the views' device) in
        place of its generator: pass the result to ``loss`` so a compiled loss gets tensors, not generators."""
        out = list(gens)
        for i, (v, keep) in self.noise_slots(len(views), setting).items():
            if keep < 1.0:
                x = views[v]
                out[i] = dropout_noise(x.shape[0], self.backbone.num_patches(x.shape[-1], setting.patch), x.device,
                                       gens[i])
        return out

    def precompute(self, patch_sizes, device) -> None:
        """Build the kernel-resize maps of these patch sizes now (not inside a compiled step)."""
        for m in self.modules():
            if isinstance(m, SeqCompressViT):
                for p in patch_sizes:
                    if p != m.base_patch:
                        m._resize_matrix(p, device)



@torch.no_grad()
def _ema(online: list[nn.Parameter], target: list[nn.Parameter], m: float) -> None:
    torch._foreach_mul_(target, m)
    torch._foreach_add_(target, [p.detach() for p in online], alpha=1 - m)


class MoCoV3(Framework):
    """Query encoder (backbone + 3-layer projector) + 2-layer predictor; momentum key encoder
    (backbone + projector); symmetrised loss ctr(q1, k2) + ctr(q2, k1), each x 2 tau."""

    def __init__(self, backbone: SeqCompressViT, hidden: int = 4096, dim: int = 256, tau: float = 0.2,
                 gather_keys: bool = True):
        super().__init__(backbone)
        self.projector = moco_mlp(3, backbone.embed_dim, hidden, dim)
        self.predictor = moco_mlp(2, dim, hidden, dim)
        self.m_backbone, self.m_projector = _frozen_copy(backbone), _frozen_copy(self.projector)
        self.tau, self.gather_keys = tau, gather_keys
        self.target_views = 2

    def _pairs(self):
        online = [p for m in (self.backbone, self.projector) for p in m.parameters()]
        target = [p for m in (self.m_backbone, self.m_projector) for p in m.parameters()]
        return online, target

    def update_target(self, momentum: float) -> None:
        _ema(*self._pairs(), momentum)

    def noise_slots(self, n_views, setting):
        return {**super().noise_slots(n_views, setting), **{2 + i: (i, setting.keep("target", i)) for i in range(2)}}

    def loss(self, views, setting, gens, **_):
        p = setting.patch
        q = [self.predictor(self.projector(self.backbone(x, p, setting.keep("online", i), gens[i])))
             for i, x in enumerate(views)]
        with torch.no_grad():
            k = [self.m_projector(self.m_backbone(x, p, setting.keep("target", i), gens[2 + i]))
                 for i, x in enumerate(views)]
        loss = mocov3_loss(q[0], k[1], self.tau, self.gather_keys) + mocov3_loss(q[1], k[0], self.tau, self.gather_keys)
        return loss, {}


class SimCLR(Framework):
    """One encoder (backbone + MoCo v3-style projector) on both views, NT-Xent over 2N views."""

    def __init__(self, backbone: SeqCompressViT, hidden: int = 4096, dim: int = 256, tau: float = 0.1,
                 gather: bool = True):
        super().__init__(backbone)
        self.projector = moco_mlp(3, backbone.embed_dim, hidden, dim)
        self.tau, self.gather = tau, gather
        self.target_views = 0

    def loss(self, views, setting, gens, **_):
        z = [self.projector(self.backbone(x, setting.patch, setting.keep("online", i), gens[i]))
             for i, x in enumerate(views)]
        return nt_xent_loss(z[0], z[1], self.tau, self.gather), {}


class DINO(Framework):
    """Student (backbone + DINO head) on all crops, EMA teacher on the 2 global crops, centering,
    sharpening; keep ratios apply to the global crops (local crops are already short). As the
    official MultiCropWrapper, the head runs once on the features of all crops together (its
    BatchNorm, with ``use_bn_in_head``, sees every crop), and the teacher has no stochastic depth."""

    def __init__(self, backbone: SeqCompressViT, out_dim: int = 65536, hidden: int = 2048, bottleneck: int = 256,
                 norm_last_layer: bool = True, student_temp: float = 0.1, center_momentum: float = 0.9,
                 n_local: int = 10, use_bn_in_head: bool = False):
        super().__init__(backbone)
        self.head = DINOHead(backbone.embed_dim, out_dim, hidden, bottleneck, norm_last_layer, use_bn_in_head)
        self.t_backbone, self.t_head = _frozen_copy(backbone, stochastic_depth=False), _frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.online_views, self.target_views = 2 + n_local, 2

    def encoder(self) -> SeqCompressViT:
        return self.t_backbone  # DINO evaluates the teacher

    def update_target(self, momentum: float) -> None:
        online = [p for m in (self.backbone, self.head) for p in m.parameters()]
        target = [p for m in (self.t_backbone, self.t_head) for p in m.parameters()]
        _ema(online, target, momentum)

    def noise_slots(self, n_views, setting):
        online = {i: (i, setting.keep("online", i) if i < 2 else 1.0) for i in range(n_views)}
        return {**online, **{n_views + i: (i, setting.keep("target", i)) for i in range(2)}}

    def loss(self, views, setting, gens, teacher_temp: float = 0.04, **_):
        p = setting.patch
        with torch.no_grad():
            t_out = self.t_head(torch.cat([self.t_backbone(x, p, setting.keep("target", i), gens[len(views) + i])
                                           for i, x in enumerate(views[:2])]))
        s_out = self.head(torch.cat([self.backbone(x, p, setting.keep("online", i) if i < 2 else 1.0, gens[i])
                                     for i, x in enumerate(views)]))
        loss = dino_loss(s_out, t_out, self.center, len(views), self.student_temp, teacher_temp)
        self.center.copy_(update_center(self.center, t_out, self.center_momentum))
        return loss, {}

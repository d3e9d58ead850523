"""The three frameworks' losses (single-process semantics unless a gather is asked for)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from shared import dist


def mocov3_loss(q: torch.Tensor, k: torch.Tensor, tau: float = 0.2, gather_keys: bool = False) -> torch.Tensor:
    """MoCo v3's contrastive loss: CE(q k^T / tau, positives on the diagonal) * 2 tau, q and k L2-normalised.

    With ``gather_keys`` the keys of every process are the negatives (keys carry no gradient)."""
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    offset = 0
    if gather_keys and dist.is_dist():
        with torch.no_grad():
            ks = [torch.empty_like(k) for _ in range(dist.world_size())]
            torch.distributed.all_gather(ks, k.contiguous())
        k, offset = torch.cat(ks), dist.rank() * q.shape[0]
    logits = q @ k.t() / tau
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2 * tau)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.1, gather: bool = False) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2N views: each view's positive is the other view of its image, the
    other 2N - 2 views are negatives; mean over the 2N anchors."""
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    if gather and dist.is_dist():
        z1, z2 = dist.all_gather_with_grad(z1), dist.all_gather_with_grad(z2)
    n = z1.shape[0]
    z = torch.cat([z1, z2])
    sim = z @ z.t() / tau
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def dino_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor, ncrops: int,
              student_temp: float = 0.1, teacher_temp: float = 0.04) -> torch.Tensor:
    """DINO's cross-entropy between the centred, sharpened teacher distribution of each global crop and
    the student distribution of every other crop (same-view pairs skipped), averaged over the pairs.

    student_out: (ncrops * B, K), crops stacked crop-major; teacher_out: (2 * B, K) for the 2 global crops.
    The center is not updated here (see ``update_center``)."""
    student = (student_out.float() / student_temp).chunk(ncrops)
    teacher = F.softmax((teacher_out.float() - center) / teacher_temp, dim=-1).detach().chunk(2)
    total, terms = 0.0, 0
    for iq, q in enumerate(teacher):
        for v, s in enumerate(student):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
            terms += 1
    return total / terms


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_out: torch.Tensor, momentum: float = 0.9) -> torch.Tensor:
    """EMA of the teacher outputs' batch mean (over all processes)."""
    batch_center = teacher_out.float().sum(0, keepdim=True)
    batch_center = dist.all_reduce_sum(batch_center) / (teacher_out.shape[0] * dist.world_size())
    return center * momentum + batch_center * (1 - momentum)

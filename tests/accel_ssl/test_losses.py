import math

import pytest
import torch
import torch.nn.functional as F

from projects.accel_ssl.losses import dino_loss, mocov3_loss, nt_xent_loss, update_center


def test_mocov3_loss_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # normalised inside: identity
    tau = 0.5
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))  # logits [[2, 0], [0, 2]]
    assert mocov3_loss(q, k, tau).item() == pytest.approx(ce * 2 * tau, rel=1e-6)
    assert mocov3_loss(q * 7, k, tau).item() == pytest.approx(ce * 2 * tau, rel=1e-6)


def test_nt_xent_matches_definition():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    tau = 0.3
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    total = 0.0
    for i in range(8):
        pos = (i + 4) % 8
        den = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(8) if j != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / tau) / den)
    assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(total / 8, rel=1e-5)


def test_dino_loss_hand_computed_and_center_untouched():
    # 2 global crops only, batch 1, K = 2: pairs (teacher 0, student 1) and (teacher 1, student 0)
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    center = torch.tensor([[1.0, 0.0]])
    st, tt = 0.5, 1.0
    q0 = F.softmax((t[0] - center[0]) / tt, -1)  # [0.5, 0.5]
    q1 = F.softmax((t[1] - center[0]) / tt, -1)
    l = lambda q, x: float(-(q * F.log_softmax(x / st, -1)).sum())
    expected = (l(q0, s[1]) + l(q1, s[0])) / 2
    before = center.clone()
    assert dino_loss(s, t, center, 2, st, tt).item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(center, before)
    new = update_center(center, t, momentum=0.9)
    assert torch.allclose(new, 0.9 * center + 0.1 * t.mean(0, keepdim=True))


def test_dino_loss_skips_same_view_pairs_with_local_crops():
    g = torch.Generator().manual_seed(1)
    b, k, ncrops = 3, 5, 4
    s, t = torch.randn(ncrops * b, k, generator=g), torch.randn(2 * b, k, generator=g)
    center = torch.zeros(1, k)
    terms = []
    for iq in range(2):
        q = F.softmax(t[iq * b:(iq + 1) * b] / 0.04, -1)
        for v in range(ncrops):
            if v != iq:
                terms.append((-(q * F.log_softmax(s[v * b:(v + 1) * b] / 0.1, -1)).sum(-1)).mean())
    assert dino_loss(s, t, center, ncrops, 0.1, 0.04).item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    assert len(terms) == 2 * ncrops - 2

"""GCE: its formula, its default q, and its limit q -> 0 (cross-entropy's value and gradient direction)."""
import pytest
import torch
import torch.nn.functional as F

from projects.ptnl.losses import build_loss, gce_loss


def test_gce_matches_its_formula():
    torch.manual_seed(0)
    logits, y = torch.randn(7, 5), torch.randint(0, 5, (7,))
    p = torch.softmax(logits, -1)[torch.arange(7), y]
    for q in (0.5, 0.7, 1.0):
        assert torch.allclose(gce_loss(logits, y, q), ((1 - p ** q) / q).mean(), atol=1e-6)
    assert torch.allclose(gce_loss(logits, y), ((1 - p ** 0.7) / 0.7).mean(), atol=1e-6)  # paper's default
    assert torch.allclose(gce_loss(logits, y, 1.0), (1 - p).mean(), atol=1e-6)          # q = 1: MAE-like


def test_gce_gradient_is_ce_gradient_weighted_by_p_to_the_q():
    torch.manual_seed(1)
    logits, y = torch.randn(1, 6, requires_grad=True), torch.tensor([2])
    g_gce, = torch.autograd.grad(gce_loss(logits, y, 0.7), logits)
    g_ce, = torch.autograd.grad(F.cross_entropy(logits, y), logits)
    p = torch.softmax(logits.detach(), -1)[0, 2]
    assert torch.allclose(g_gce, p ** 0.7 * g_ce, atol=1e-6)


def test_gce_tends_to_cross_entropy_as_q_goes_to_0():
    torch.manual_seed(2)
    logits, y = torch.randn(16, 10) * 3, torch.randint(0, 10, (16,))
    ce = F.cross_entropy(logits, y)
    gaps, cosines = [], []
    for q in (0.7, 0.1, 1e-2, 1e-4):
        x = logits.clone().requires_grad_(True)
        loss = gce_loss(x, y, q)
        g, = torch.autograd.grad(loss, x)
        x2 = logits.clone().requires_grad_(True)
        g_ce, = torch.autograd.grad(F.cross_entropy(x2, y), x2)
        gaps.append(abs(float(loss.detach() - ce)))
        cosines.append(float(F.cosine_similarity(g.flatten(), g_ce.flatten(), dim=0)))
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 5e-3  # the gap is ~ q E[log^2 p] / 2
    assert cosines == sorted(cosines) and cosines[-1] > 0.9999 and cosines[0] < 0.99


def test_gce_down_weights_samples_the_model_finds_unlikely():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0])  # the second sample looks mislabelled
    g, = torch.autograd.grad(gce_loss(logits, y, 0.7) * 2, logits)
    x = logits.detach().clone().requires_grad_(True)
    g_ce, = torch.autograd.grad(F.cross_entropy(x, y, reduction="sum"), x)
    ratio = g.norm(dim=1) / g_ce.norm(dim=1)
    assert ratio[1] < 0.1 < 0.9 < ratio[0]


def test_bad_q_and_loss_name():
    with pytest.raises(ValueError):
        gce_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), 0.0)
    with pytest.raises(ValueError, match="ce or gce"):
        build_loss("mae")

import math

import pytest
import torch
import torch.nn.functional as F

from projects.latent_mim.losses import avg_pairwise_sim, norm_l2_loss, patch_infonce_loss, pixel_mae_loss

pytestmark = pytest.mark.timeout(60)


def official_forward_loss(pred, target, loss="infonce_patches", tau=0.2, pred2unit=True):
    """models_lmim.py LMIM.forward_loss, re-implemented line by line from reading the official code."""
    if loss == "norm_l2":
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
        return F.mse_loss(pred, target)
    bs, nt, d = pred.shape
    if pred2unit:
        pred_mu = pred.mean(1, keepdims=True)
        pred_std = pred.std(1, keepdims=True)
        pred = (pred - pred_mu) / (pred_std + 1e-4)
    pred = F.normalize(pred, p=2, dim=-1)
    target = F.normalize(target, p=2, dim=-1)
    scores = torch.einsum("npd,nqd->npq", pred, target) / tau
    labels = torch.arange(nt, dtype=torch.long, device=pred.device)[None].repeat(bs, 1)
    return F.cross_entropy(scores.flatten(0, 1), labels.flatten(0, 1)) * (tau * 2)


def official_avg_pairwise_sim(q, k):
    q = F.normalize(q, p=2, dim=-1)
    k = F.normalize(k, p=2, dim=-1)
    return torch.einsum("npd,nqd->npq", q, k).mean()


@pytest.mark.parametrize("tau", [0.2, 0.1, 1.0])
def test_infonce_equals_the_official_forward_loss(tau):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 176, 64, generator=g), torch.randn(3, 176, 64, generator=g)
    target[1] = pred[1] * 2 + 0.1 * target[1]  # a partly solved image in the batch
    torch.testing.assert_close(patch_infonce_loss(pred, target, tau), official_forward_loss(pred, target, tau=tau),
                               rtol=1e-6, atol=1e-6)


def test_norm_l2_and_monitors_equal_the_official():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 10, 16, generator=g), torch.randn(2, 10, 16, generator=g) * 3 + 1
    torch.testing.assert_close(norm_l2_loss(pred, target), official_forward_loss(pred, target, "norm_l2"))
    torch.testing.assert_close(avg_pairwise_sim(pred), official_avg_pairwise_sim(pred, pred))


def test_hand_computed_one_hot_case():
    """pred = target = the N basis vectors: after standardisation across patches, cos(pred_i, e_i) =
    sqrt((N-1)/N) and cos(pred_i, e_j) = -1/sqrt(N(N-1)) (std is unbiased: the common scale cancels)."""
    n, tau = 5, 0.2
    e = torch.eye(n).unsqueeze(0)
    a, b = math.sqrt((n - 1) / n), -1 / math.sqrt(n * (n - 1))
    expected = 2 * tau * (-(a / tau) + math.log(math.exp(a / tau) + (n - 1) * math.exp(b / tau)))
    assert patch_infonce_loss(e, e.clone(), tau).item() == pytest.approx(expected, rel=1e-5)


def test_permutations_and_batch_independence():
    g = torch.Generator().manual_seed(2)
    target = torch.randn(2, 20, 32, generator=g)
    pred = target + 0.3 * torch.randn(2, 20, 32, generator=g)
    base = patch_infonce_loss(pred, target)
    perm = torch.randperm(20, generator=g)
    # relabelling the patches of an image (both sides) changes nothing
    torch.testing.assert_close(patch_infonce_loss(pred[:, perm], target[:, perm]), base)
    # pairing predictions with the wrong targets costs a lot
    assert patch_infonce_loss(pred, target[:, perm]) > base + 0.5
    # negatives stay inside each image: the batch loss is the mean of the per-image losses
    per_image = torch.stack([patch_infonce_loss(pred[i:i + 1], target[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(base, per_image.mean())


def test_random_init_loss_is_about_2tau_log_n():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(8, 176, 768, generator=g), torch.randn(8, 176, 768, generator=g)
    assert patch_infonce_loss(pred, target).item() == pytest.approx(0.4 * math.log(176), rel=0.02)


def test_bad_shapes_and_mae_loss():
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        patch_infonce_loss(torch.randn(2, 3, 4), torch.randn(2, 4, 4))
    pix = torch.randn(2, 6, 12)
    mean, var = pix.mean(-1, keepdim=True), pix.var(-1, keepdim=True)
    assert pixel_mae_loss((pix - mean) / (var + 1e-6) ** 0.5, pix).item() == pytest.approx(0.0, abs=1e-10)
    assert pixel_mae_loss(torch.zeros_like(pix), pix, norm_pix=False).item() == pytest.approx((pix ** 2).mean().item())

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from projects.ezvsl.losses import mil_contrastive_loss
from projects.ezvsl.model import EZVSL, ObjectSaliency


def naive_loss(img, aud, tau):
    b = img.shape[0]
    s = torch.zeros(b, b)
    for i in range(b):
        for j in range(b):
            s[i, j] = max((img[i, :, h, w] @ aud[j]).item() for h in range(img.shape[2]) for w in range(img.shape[3])) / tau
    lab = torch.arange(b)
    return F.cross_entropy(s, lab) + F.cross_entropy(s.t(), lab)


def rand_inputs(b=4, c=8, h=3, w=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, c, h, w, generator=g), dim=1), F.normalize(torch.randn(b, c, generator=g), dim=1)


def test_loss_matches_the_definition():
    img, aud = rand_inputs()
    loss, maps = mil_contrastive_loss(img, aud, tau=0.03)
    assert loss.item() == pytest.approx(naive_loss(img, aud, 0.03).item(), rel=1e-5)
    assert maps.shape == (4, 3, 3)
    assert torch.allclose(maps[2], torch.einsum("chw,c->hw", img[2], aud[2]) / 0.03)


def test_loss_hand_computed_two_pairs():
    # two 1x2 maps; image 0 has audio 0's direction at location 1, image 1 has audio 1's at location 0
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    img = torch.zeros(2, 2, 1, 2)
    img[0, :, 0, 0], img[0, :, 0, 1] = torch.tensor([0.0, -1.0]), torch.tensor([1.0, 0.0])
    img[1, :, 0, 0], img[1, :, 0, 1] = torch.tensor([0.0, 1.0]), torch.tensor([-1.0, 0.0])
    tau = 0.5
    # s = [[max(0, 1), max(-1, 0)], [max(0, -1), max(1, 0)]] / tau = [[2, 0], [0, 2]]
    ce = -torch.log(torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 1))
    loss, maps = mil_contrastive_loss(img, a, tau)
    assert loss.item() == pytest.approx(2 * ce.item(), rel=1e-6)  # both directions summed
    assert maps[0, 0].tolist() == [0.0, 2.0]


def test_loss_is_invariant_to_batch_permutation():
    img, aud = rand_inputs(b=5)
    perm = torch.randperm(5)
    a, _ = mil_contrastive_loss(img, aud, 0.07)
    b, _ = mil_contrastive_loss(img[perm], aud[perm], 0.07)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_model_shapes_gradients_and_official_names():
    torch.manual_seed(0)
    model = EZVSL(out_dim=32)
    image, spec = torch.randn(3, 3, 64, 64), torch.randn(3, 1, 257, 34)
    img, aud = model(image, spec)
    assert img.shape == (3, 32, 2, 2) and aud.shape == (3, 32)
    assert torch.allclose(img.norm(dim=1), torch.ones(3, 2, 2), atol=1e-5)
    assert torch.allclose(aud.norm(dim=1), torch.ones(3), atol=1e-5)
    loss, _ = mil_contrastive_loss(img, aud, 0.03)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {"imgnet", "img_proj", "audnet", "aud_proj"}
    assert isinstance(model.audnet.avgpool, torch.nn.AdaptiveMaxPool2d)
    # at 224 px the image map is the paper's 7x7
    assert model.encode_image(torch.randn(1, 3, 224, 224)).shape[-2:] == (7, 7)


def test_ogl_is_frozen_and_is_the_channel_mean_of_abs_features(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    ref = resnet18()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    ogl = ObjectSaliency(str(tmp_path / "r18.pth"))
    assert not any(p.requires_grad for p in ogl.parameters())
    ogl.train()
    assert not ogl.net.training  # stays in eval mode (BN statistics frozen)
    x = torch.randn(2, 3, 64, 64)
    ref.eval()
    feats = torch.nn.Sequential(*list(ref.children())[:-2])(x)
    assert torch.allclose(ogl(x), feats.abs().mean(1), atol=1e-5)


def test_image_weights_file_is_checked(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a ResNet-18"):
        EZVSL(image_weights=str(tmp_path / "bad.pth"))
    with pytest.raises(FileNotFoundError):
        EZVSL(image_weights=str(tmp_path / "none.pth"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank, world, port, out):
    from shared import dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    dist.init("cpu")
    img, aud = rand_inputs(b=4, seed=3)
    img, aud = img[2 * rank:2 * rank + 2].clone().requires_grad_(True), aud[2 * rank:2 * rank + 2].clone().requires_grad_(True)
    loss, _ = mil_contrastive_loss(img, aud, 0.1, gather_negatives=True)
    (loss / world).backward()  # DDP averages gradients over ranks
    local, _ = mil_contrastive_loss(img.detach(), aud.detach(), 0.1, gather_negatives=False)
    torch.save({"loss": loss.detach(), "local": local, "gi": img.grad, "ga": aud.grad}, f"{out}/r{rank}.pt")
    dist.cleanup()


@pytest.mark.dist
def test_gathered_negatives_equal_the_full_batch_loss(tmp_path):
    mp.spawn(_gather_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"r{i}.pt") for i in range(2)]
    img, aud = rand_inputs(b=4, seed=3)
    img.requires_grad_(True), aud.requires_grad_(True)
    full, _ = mil_contrastive_loss(img, aud, 0.1)
    full.backward()
    assert ((r[0]["loss"] + r[1]["loss"]) / 2).item() == pytest.approx(full.item(), rel=1e-5)
    assert torch.allclose(torch.cat([r[0]["gi"], r[1]["gi"]]), img.grad, atol=1e-5)
    assert torch.allclose(torch.cat([r[0]["ga"], r[1]["ga"]]), aud.grad, atol=1e-5)
    assert r[0]["local"].item() < r[0]["loss"].item() + 5  # sanity: local-batch loss is a different number
    assert r[0]["local"].item() != pytest.approx(r[0]["loss"].item())

"""The EZ-VSL networks (official ``model.py``), with the official parameter names so released
checkpoints load: ``imgnet`` (ImageNet ResNet-18, fine-tuned), ``img_proj`` (1x1 conv),
``audnet`` (ResNet-18 from scratch, 1-channel input, max pooling), ``aud_proj`` (linear); and the
object-guided localization network (a separate frozen ImageNet ResNet-18)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from shared.checkpoint import load_weights
from shared.weights import torchvision_state_dict

log = logging.getLogger(__name__)


def resnet18_trunk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv1 ... layer4 of a torchvision ResNet: the (B, 512, H/32, W/32) map."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def imagenet_resnet18(weights: str | None, config_key: str = "model.image_weights") -> nn.Module:
    """ResNet-18 with ImageNet weights from ``weights``: 'torchvision' (the library's weights from its
    cache, or downloaded when online; offline, the error says what to download and where), a local
    state-dict file, or None for random initialisation."""
    net = resnet18()
    if weights == "torchvision":
        net.load_state_dict(torchvision_state_dict(ResNet18_Weights.IMAGENET1K_V1, config_key=config_key))
    elif weights:
        path = Path(weights).expanduser()
        state = load_weights(path)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise ValueError(f"{path} is not a ResNet-18 state dict: {e}") from e
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"{path} is not a ResNet-18 state dict (missing {missing[:4]}, unexpected {unexpected[:4]})")
    net.avgpool = nn.Identity()
    net.fc = nn.Identity()
    return net


class EZVSL(nn.Module):
    def __init__(self, out_dim: int = 512, image_weights: str | None = None):
        super().__init__()
        self.imgnet = imagenet_resnet18(image_weights)
        self.img_proj = nn.Conv2d(512, out_dim, kernel_size=1)
        self.audnet = resnet18()
        self.audnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.audnet.avgpool = nn.AdaptiveMaxPool2d(1)
        self.audnet.fc = nn.Identity()
        self.aud_proj = nn.Linear(512, out_dim)
        for net in (self.audnet, self.img_proj, self.aud_proj):
            for m in net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01)
                elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.normal_(m.weight, mean=1, std=0.02)
                    nn.init.constant_(m.bias, 0)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> per-location L2-normalised (B, D, H/32, W/32)."""
        return F.normalize(self.img_proj(resnet18_trunk(self.imgnet, image)), dim=1)

    def encode_audio(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, T) spectrogram -> L2-normalised (B, D)."""
        return F.normalize(self.aud_proj(self.audnet(spec)), dim=1)

    def forward(self, image: torch.Tensor, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(image), self.encode_audio(spec)


class ObjectSaliency(nn.Module):
    """OGL: mean |activation| over channels of a frozen ImageNet ResNet-18's last map."""

    def __init__(self, weights: str | None = None):
        super().__init__()
        self.net = imagenet_resnet18(weights, config_key="model.ogl_weights")
        self.net.eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # the channel mean in fp32 however the trunk ran (mean is not an autocast op: it keeps fp32)
        return resnet18_trunk(self.net, image).float().abs().mean(1)


def build_model(cfg, device: torch.device | str = "cpu") -> EZVSL:
    """The EZ-VSL network of ``cfg.model`` on ``device`` (channels_last on CUDA with ``train.channels_last``)."""
    device = torch.device(device)
    model = EZVSL(cfg.model.out_dim, cfg.model.image_weights).to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model

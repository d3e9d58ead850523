"""OneAVM's networks: one shared audio-visual encoder and the separation decoder.

- image encoder: ImageNet ResNet-18 trunk (conv1 ... layer4), a 1x1 conv to ``dim``, L2-normalised per
  location: the spatial map v(p) every objective uses (EZ-VSL);
- audio encoder: ResNet-18 from scratch on a 1-channel spectrogram, global MAX pooling, a linear layer
  to ``dim``, L2-normalised (EZ-VSL);
- separation decoder (Sound-of-Pixels): a U-Net on the mixture's log-magnitude (log-frequency grid)
  giving K feature maps; each source's visual feature is the same image trunk's map through a 1x1 conv
  to K, max-pooled over locations and squashed by a sigmoid; the mask is
  sigmoid(sum_k s_k v_k a_k(f, t) + b) (SoP's "InnerProd" synthesizer with its per-channel scale s).

The U-Net's exact layout is ours (SoP's unet7 family: 4x4 stride-2 convolutions down with
LeakyReLU(0.2) and BatchNorm, bilinear upsampling + 3x3 convolutions up with skip connections, a
BatchNorm on the input); ``levels`` sets the depth (7 for a 256 x 256 grid as SoP, 5 for the demo).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from shared.checkpoint import load_weights


def imagenet_resnet18(weights: str | None) -> nn.Module:
    """ResNet-18 trunk with ImageNet weights from ``weights``: 'torchvision' (the library's loader: its
    cache or the network), a local state-dict file, or None (random initialisation)."""
    if weights == "torchvision":
        net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    else:
        net = resnet18()
        if weights:
            path = Path(weights).expanduser()
            state = {k: v for k, v in load_weights(path).items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ValueError(f"{path} is not a ResNet-18 state dict (missing {missing[:4]}, "
                                 f"unexpected {unexpected[:4]})")
    net.avgpool, net.fc = nn.Identity(), nn.Identity()
    return net


def resnet_trunk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


class UNet(nn.Module):
    """(B, 1, F, T) -> (B, out_channels, F, T); F and T must be divisible by 2**levels."""

    def __init__(self, levels: int = 7, ngf: int = 64, out_channels: int = 32):
        super().__init__()
        if levels < 2:
            raise ValueError("the U-Net needs at least 2 levels")
        self.levels = levels
        chans = [min(ngf * 2 ** i, ngf * 8) for i in range(levels)]
        self.bn0 = nn.BatchNorm2d(1)
        self.down = nn.ModuleList()
        c_in = 1
        for i, c in enumerate(chans):
            layers = [] if i == 0 else [nn.LeakyReLU(0.2, inplace=False)]
            layers.append(nn.Conv2d(c_in, c, 4, 2, 1, bias=False))
            if 0 < i < levels - 1:
                layers.append(nn.BatchNorm2d(c))
            self.down.append(nn.Sequential(*layers))
            c_in = c
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            c_skip_in = chans[i] if i == levels - 1 else chans[i] * 2  # innermost has no skip yet
            c_out = chans[i - 1] if i > 0 else ngf
            layers = [nn.ReLU(inplace=False), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                      nn.Conv2d(c_skip_in, c_out, 3, 1, 1, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            self.up.append(nn.Sequential(*layers))
        self.head = nn.Conv2d(ngf, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, t = x.shape[-2:]
        m = 2 ** self.levels
        if f % m or t % m:
            raise ValueError(f"the U-Net with {self.levels} levels needs a grid divisible by {m}, got {f}x{t}")
        x = self.bn0(x)
        skips = []
        for d in self.down:
            x = d(x)
            skips.append(x)
        for j, u in enumerate(self.up):
            if j > 0:
                x = torch.cat([x, skips[-1 - j]], 1)
            x = u(x)
        return self.head(x)


class InnerProductSynthesizer(nn.Module):
    """mask logit(f, t) = sum_k scale_k * v_k * a_k(f, t) + bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, visual: torch.Tensor, sound: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bk,bkft->bft", visual * self.scale, sound) + self.bias


class OneAVM(nn.Module):
    def __init__(self, dim: int = 512, image_weights: str | None = None, unet_levels: int = 7,
                 unet_ngf: int = 64, sep_channels: int = 32):
        super().__init__()
        self.imgnet = imagenet_resnet18(image_weights)
        self.img_proj = nn.Conv2d(512, dim, 1)
        self.audnet = resnet18()
        self.audnet.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        self.audnet.avgpool = nn.AdaptiveMaxPool2d(1)
        self.audnet.fc = nn.Identity()
        self.aud_proj = nn.Linear(512, dim)
        self.sep_visual = nn.Conv2d(512, sep_channels, 1)
        self.unet = UNet(unet_levels, unet_ngf, sep_channels)
        self.synth = InnerProductSynthesizer(sep_channels)
        for net in (self.audnet, self.img_proj, self.aud_proj):  # sep_visual keeps PyTorch's default (fan-in) init
            for m in net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.01)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.normal_(m.weight, mean=1, std=0.02)
                    nn.init.zeros_(m.bias)

    # -- the shared encoder --------------------------------------------------------------------
    def image_trunk(self, image: torch.Tensor) -> torch.Tensor:
        return resnet_trunk(self.imgnet, image)

    def image_map(self, trunk: torch.Tensor) -> torch.Tensor:
        """(B, 512, h, w) trunk -> L2-normalised (B, dim, h, w)."""
        return F.normalize(self.img_proj(trunk), dim=1)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_map(self.image_trunk(image))

    def encode_audio(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, T) -> L2-normalised (B, dim)."""
        return F.normalize(self.aud_proj(self.audnet(spec)), dim=1)

    # -- the separation decoder ----------------------------------------------------------------
    def separation_visual(self, trunk: torch.Tensor) -> torch.Tensor:
        """(B, 512, h, w) -> (B, K): max over locations, sigmoid (SoP's frame feature)."""
        return torch.sigmoid(self.sep_visual(trunk).flatten(2).amax(-1))

    def sound_features(self, log_mag_mix: torch.Tensor) -> torch.Tensor:
        """(B, F, T) log-magnitude of the mixture -> (B, K, F, T)."""
        return self.unet(log_mag_mix.unsqueeze(1))

    def mask_logits(self, visual: torch.Tensor, sound: torch.Tensor) -> torch.Tensor:
        return self.synth(visual, sound)


def build_model(cfg, device: torch.device | str | None = None) -> OneAVM:
    """The OneAVM network of ``cfg.model`` (random initialisation when model.image_weights is null)."""
    m = cfg.model
    model = OneAVM(m.dim, m.image_weights, m.unet_levels, m.unet_ngf, m.sep_channels)
    device = torch.device(device or "cpu")
    model = model.to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model

"""Published weights fetched by URL (torchvision's ImageNet models, torch.hub files) that also work
offline: a file already in torch.hub's cache loads without the network; a machine that cannot download
gets an error saying what to download and where to put it, not a bare ``URLError``.

    net.load_state_dict(torchvision_state_dict("ResNet18_Weights.IMAGENET1K_V1", config_key="model.image_weights"))
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from shared.checkpoint import load_weights


class WeightsUnavailable(RuntimeError):
    pass


def hub_cache_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps ``url``'s file ($TORCH_HOME/hub/checkpoints/<name>)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def hub_state_dict(url: str, what: str | None = None, config_key: str | None = None) -> dict:
    """The state dict at ``url`` through torch.hub's cache (weights-only load)."""
    cached = hub_cache_path(url)
    if cached.is_file():
        return load_weights(cached)
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True)
    except OSError as e:  # URLError, timeouts, refused connections, DNS failures
        if cached.is_file():  # a concurrent process finished the download
            return load_weights(cached)
        alt = f", or give its path as {config_key}=/path/to/{cached.name}" if config_key else ""
        raise WeightsUnavailable(
            f"could not download {what or 'the weights'} from {url} ({type(e).__name__}: {e}); this machine "
            f"looks offline. Download the file where there is a network (e.g. curl -L -o {cached.name} {url}) "
            f"and put it at {cached} (torch.hub's cache; TORCH_HOME moves it){alt}.") from e
    return {k.removeprefix("module."): v for k, v in state.items()}


def torchvision_state_dict(weights, config_key: str | None = None) -> dict:
    """A torchvision weights enum (``ResNet18_Weights.IMAGENET1K_V1`` or its name) as a state dict."""
    if isinstance(weights, str):
        from torchvision.models import get_weight

        weights = get_weight(weights)
    return hub_state_dict(weights.url, what=f"torchvision's {weights}", config_key=config_key)

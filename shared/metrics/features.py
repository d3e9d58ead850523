"""Frozen features of a dataset for the probes (k-NN, linear): one pass in eval mode, in the training
precision, returned in fp32 on the CPU; batches whose samples were all unreadable are skipped (the
bad-sample policy of shared/data/robust.py has counted them)."""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader

from shared.amp import autocast
from shared.data.robust import collate_skipping_bad
from shared.logging import progress


@torch.no_grad()
def extract_features(module: torch.nn.Module, ds, device, batch_size: int, workers: int = 0,
                     amp: str | None = "bf16", desc: str = "features",
                     encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     key: str = "views") -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of ``ds`` (items with ``key`` and ``label``); ``encode`` maps a batch to
    features (default: ``module`` itself). ``module`` is put in eval mode and back as it was."""
    was = module.training
    module.eval()
    encode = encode or module
    feats, labels = [], []
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping_bad)
    try:
        for batch in progress(loader, desc=desc):
            if key not in batch:
                continue
            with autocast(device, amp):
                f = encode(batch[key].to(device, non_blocking=True))
            feats.append(f.float().cpu())
            labels.append(batch["label"])
    finally:
        module.train(was)
    if not feats:
        raise RuntimeError(f"{desc}: no readable sample in {len(ds)}")
    return torch.cat(feats), torch.cat(labels)

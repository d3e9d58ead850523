"""Sound-source localization metrics, exactly as the EZ-VSL / LVS evaluation code computes them.

- gt map: Flickr-SoundNet's annotator consensus (sum of per-annotator box masks / 2, clipped
  at 1, so values in {0, 0.5, 1}) or VGG-SS's binary union of boxes;
- cIoU: the prediction binarised at its median pixel (the value at sorted position
  floor(H*W/2); pixels >= it are positive), then sum(P*G) / (sum(G) + sum(P*[G==0]));
- summary: AP50 (fraction of images with cIoU >= 0.5, the tables' "cIoU"), AUC of the
  success curve over thresholds 0, 0.05, ..., 1 (trapezoid), and the mean cIoU.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import metrics as skm


def gt_map_from_boxes(boxes: Iterable[Sequence[float]], size: int = 224, mode: str = "flickr") -> np.ndarray:
    """(size, size) ground-truth map from pixel ``(xmin, ymin, xmax, ymax)`` boxes (end exclusive)."""
    if mode not in ("flickr", "vggss"):
        raise ValueError(f"mode must be 'flickr' or 'vggss', got {mode!r}")
    gt = np.zeros((size, size))
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box needs 4 numbers (xmin, ymin, xmax, ymax), got {box!r}")
        x0, y0, x1, y1 = (int(v) for v in box)
        gt[y0:y1, x0:x1] += 1
    if mode == "flickr":
        gt = np.minimum(gt / 2, 1.0)
    else:
        gt = (gt > 0).astype(np.float64)
    return gt


def median_binarize(pred_map: np.ndarray) -> np.ndarray:
    flat = np.sort(np.asarray(pred_map).ravel())
    thr = flat[int(pred_map.shape[0] * pred_map.shape[1] * 0.5)]
    return (pred_map >= thr).astype(np.float64)


def ciou(pred_map: np.ndarray, gt_map: np.ndarray) -> float:
    """Consensus IoU of a continuous (H, W) prediction, binarised at its median, against a gt map."""
    pred_map, gt_map = np.asarray(pred_map), np.asarray(gt_map)
    if pred_map.shape != gt_map.shape or pred_map.ndim != 2:
        raise ValueError(f"pred_map {pred_map.shape} and gt_map {gt_map.shape} must be the same (H, W)")
    p = median_binarize(pred_map)
    return float(np.sum(p * gt_map) / (np.sum(gt_map) + np.sum(p * (gt_map == 0))))


def summarize(cious: Sequence[float]) -> dict[str, float]:
    """``ciou_ap50``, ``auc`` and ``mean_ciou`` as fractions in [0, 1]."""
    c = np.asarray(list(cious), dtype=np.float64)
    if c.size == 0:
        raise ValueError("summarize() needs at least one cIoU value")
    thresholds = [0.05 * i for i in range(21)]
    success = [np.sum(c >= t) / len(c) for t in thresholds]
    return {"ciou_ap50": float(np.mean(c >= 0.5)), "auc": float(skm.auc(thresholds, success)),
            "mean_ciou": float(np.mean(c))}


def minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else x


def upsample_maps(maps: torch.Tensor, size: int = 224, mode: str = "bilinear", align_corners: bool = True) -> np.ndarray:
    """(B, h, w) low-resolution maps -> (B, size, size) float numpy, as the test script upsamples."""
    up = F.interpolate(maps.float().unsqueeze(1), size=(size, size), mode=mode, align_corners=align_corners)
    return up[:, 0].cpu().numpy()

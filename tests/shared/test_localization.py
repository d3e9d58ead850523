import numpy as np
import pytest
import torch

from shared.metrics.localization import ciou, gt_map_from_boxes, summarize, upsample_maps


def test_flickr_consensus_and_vggss_union():
    boxes = [(0, 0, 4, 4), (2, 2, 6, 6), (3, 3, 5, 5)]
    g = gt_map_from_boxes(boxes, size=8, mode="flickr")
    assert g[0, 0] == 0.5  # one annotator
    assert g[2, 2] == 1.0 and g[3, 3] == 1.0  # two and three annotators, clipped
    assert g[7, 7] == 0.0 and g[4, 4] == 1.0 and g[5, 5] == 0.5
    v = gt_map_from_boxes(boxes, size=8, mode="vggss")
    assert set(np.unique(v)) == {0.0, 1.0} and v.sum() == 16 + 16 - 4 + 0  # union of the 3 boxes
    with pytest.raises(ValueError):
        gt_map_from_boxes(boxes, mode="coco")


def test_ciou_hand_computed():
    # 4x4 image, gt = the left half (8 px); prediction highest on the left two columns
    gt = np.zeros((4, 4))
    gt[:, :2] = 1
    pred = np.tile(np.array([4.0, 3.0, 2.0, 1.0]), (4, 1))
    # median threshold: sorted value at position 8 is 3 -> the two left columns are positive: perfect
    assert ciou(pred, gt) == 1.0
    # the right half predicted: intersection 0, union = |G| + |P outside G| = 8 + 8
    assert ciou(pred[:, ::-1].copy(), gt) == 0.0
    # ties: a constant map is all positive -> 8 / (8 + 8)
    assert ciou(np.ones((4, 4)), gt) == 0.5
    # soft (consensus) gt: 0.5 pixels count half in the intersection and are not 'outside' G
    soft = gt * 0.5
    assert ciou(pred, soft) == pytest.approx((8 * 0.5) / (4 + 0))


def test_ciou_shape_check():
    with pytest.raises(ValueError):
        ciou(np.zeros((4, 4)), np.zeros((4, 5)))


def test_summarize_ap50_auc_mean():
    s = summarize([0.0, 0.5, 1.0, 0.25])
    assert s["ciou_ap50"] == 0.5
    assert s["mean_ciou"] == pytest.approx(0.4375)
    # success curve: 1 at t=0; 0.75 for t in (0, 0.25]; 0.5 for (0.25, 0.5]; 0.25 for (0.5, 1]
    thr = [0.05 * i for i in range(21)]
    succ = [np.mean(np.array([0.0, 0.5, 1.0, 0.25]) >= t) for t in thr]
    assert s["auc"] == pytest.approx(np.trapezoid(succ, thr))
    assert summarize([1.0])["auc"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        summarize([])


def test_upsample_align_corners_keeps_corners():
    m = torch.arange(4.0).reshape(1, 2, 2)
    up = upsample_maps(m, size=224)
    assert up.shape == (1, 224, 224)
    assert up[0, 0, 0] == 0 and up[0, -1, -1] == 3

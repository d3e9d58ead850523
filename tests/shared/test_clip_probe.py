"""The CLIP/CoOp linear probe: fixed C (PTNL's baseline) and CoOp's C search on validation data."""
import numpy as np
import pytest

from shared.metrics.logreg_probe import INITIAL_GRID, fit_logreg_probe


def blobs(n, k=3, d=8, sep=3.0, seed=0):
    centers = np.random.default_rng(100).normal(size=(k, d)) * sep  # the same classes for every seed
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    return centers[y] + rng.normal(size=(n, d)), y


def test_fixed_C_probe():
    x, y = blobs(90)
    xt, yt = blobs(300, seed=1)
    res = fit_logreg_probe(x, y, C=1e3)
    assert res.C == 1e3 and res.accuracy(xt, yt) > 0.9 and res.val_accuracy is None
    assert np.allclose(res.predict_proba(xt).sum(1), 1)


def test_C_search_explores_the_grid_then_halves_the_interval():
    x, y = blobs(60, sep=0.8)
    xv, yv = blobs(60, sep=0.8, seed=2)
    res = fit_logreg_probe(x, y, xv, yv, C="search", search_steps=4)
    assert [c for c, _ in res.history[:7]] == list(INITIAL_GRID)
    assert len(res.history) == 7 + 2 * 4
    peak = INITIAL_GRID[int(np.argmax([a for _, a in res.history[:7]]))]
    assert peak / 10 - 1e-12 <= res.C <= peak * 10 + 1e-9
    assert res.val_accuracy == max(a for c, a in res.history[-2:] if c == res.C)
    with pytest.raises(ValueError, match="validation"):
        fit_logreg_probe(x, y, C="search")


def test_classes_missing_from_training_get_zero_probability():
    x, y = blobs(30, k=3)
    keep = y != 1
    res = fit_logreg_probe(x[keep], y[keep], C=1.0, num_classes=4)
    p = res.predict_proba(x)
    assert p.shape == (30, 4) and np.all(p[:, 1] == 0) and np.all(p[:, 3] == 0)

"""Linear probe on frozen features with scikit-learn's LogisticRegression, as CLIP/CoOp evaluate it.

Two ways to choose the inverse regularisation strength C:
- a fixed C (PTNL's legacy linear-probe baseline: ``LogisticRegression(random_state=0, C=1e3,
  max_iter=1000)`` on unnormalised CLIP image features);
- CoOp's search (``lpclip/linear_probe.py``): validation accuracy at C in {1e6, 1e4, 1e2, 1, 1e-2,
  1e-4, 1e-6}; around the best C*, a search in log10(C) between C*/10 and 10 C*: at each of 8 steps
  fit both ends, keep the better one as the answer and halve the interval towards it. The
  classifier of the last step's winner is the result.

    res = fit_logreg_probe(train_x, train_y, val_x, val_y, C="search")
    res.classifier.predict(test_x); res.C; res.val_accuracy
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

INITIAL_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


@dataclass
class ProbeResult:
    classifier: LogisticRegression
    C: float
    val_accuracy: float | None = None
    history: list[tuple[float, float]] = field(default_factory=list)  # (C, val accuracy) in search order

    def predict_proba(self, x) -> np.ndarray:
        """[N, num_classes] probabilities, columns for every class 0..K-1 (classes absent from
        the training set get probability 0)."""
        p = self.classifier.predict_proba(np.asarray(x))
        k = self.num_classes
        if p.shape[1] == k:
            return p
        full = np.zeros((p.shape[0], k), dtype=p.dtype)
        full[:, self.classifier.classes_] = p
        return full

    @property
    def num_classes(self) -> int:
        return int(getattr(self, "_num_classes", self.classifier.classes_.max() + 1))

    def accuracy(self, x, y) -> float:
        return float((self.predict_proba(x).argmax(1) == np.asarray(y)).mean())


def _fit(x, y, C: float, max_iter: int, random_state: int) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, max_iter=max_iter, random_state=random_state, solver="lbfgs").fit(x, y)


def _acc(clf: LogisticRegression, x, y) -> float:
    return float((clf.predict(x) == y).mean())


def fit_logreg_probe(train_x, train_y, val_x=None, val_y=None, C: float | str = 1e3, max_iter: int = 1000,
                     search_steps: int = 8, random_state: int = 0, num_classes: int | None = None) -> ProbeResult:
    """Fit on (train_x, train_y); ``C="search"`` picks C on (val_x, val_y) with CoOp's search."""
    train_x, train_y = np.asarray(train_x, dtype=np.float64), np.asarray(train_y)
    if len(np.unique(train_y)) < 2:
        raise ValueError("a logistic-regression probe needs at least two classes in the training set")
    if C != "search":
        res = ProbeResult(_fit(train_x, train_y, float(C), max_iter, random_state), float(C))
        if val_x is not None:
            res.val_accuracy = _acc(res.classifier, np.asarray(val_x, dtype=np.float64), np.asarray(val_y))
    else:
        if val_x is None or val_y is None:
            raise ValueError("C='search' needs validation features and labels")
        val_x, val_y = np.asarray(val_x, dtype=np.float64), np.asarray(val_y)
        history = []
        accs = []
        for c in INITIAL_GRID:
            accs.append(_acc(_fit(train_x, train_y, c, max_iter, random_state), val_x, val_y))
            history.append((c, accs[-1]))
        peak = INITIAL_GRID[int(np.argmax(accs))]
        lo, hi = math.log10(peak) - 1, math.log10(peak) + 1
        best = None
        for _ in range(search_steps):
            c_lo, c_hi = 10 ** lo, 10 ** hi
            clf_lo = _fit(train_x, train_y, c_lo, max_iter, random_state)
            clf_hi = _fit(train_x, train_y, c_hi, max_iter, random_state)
            a_lo, a_hi = _acc(clf_lo, val_x, val_y), _acc(clf_hi, val_x, val_y)
            history += [(c_lo, a_lo), (c_hi, a_hi)]
            if a_lo < a_hi:
                best = (clf_hi, c_hi, a_hi)
                lo = 0.5 * (lo + hi)
            else:
                best = (clf_lo, c_lo, a_lo)
                hi = 0.5 * (lo + hi)
        res = ProbeResult(best[0], best[1], best[2], history)
    if num_classes is not None:
        res._num_classes = int(num_classes)
    return res

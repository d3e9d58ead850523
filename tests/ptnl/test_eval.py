"""The test metrics as Dassl's Classification evaluator computes them."""
import numpy as np
import pytest
import torch

from projects.ptnl.eval import classification_metrics


def onehot_logits(pred, num_classes):
    return torch.nn.functional.one_hot(torch.as_tensor(pred), num_classes).float()


def test_macro_f1_ignores_classes_predicted_but_absent_from_the_truth():
    """Truth has classes 0 and 1; class 2 is predicted once but never true. Dassl:
    f1_score(average='macro', labels=np.unique(y_true)) averages F1 over classes 0 and 1 only."""
    y = [0, 0, 0, 1, 1, 1]
    pred = [0, 0, 2, 1, 1, 0]
    m = classification_metrics(onehot_logits(pred, 3), torch.tensor(y), 3)
    f1_0 = 2 * 2 / (3 + 3)           # tp 2, 3 true, 3 predicted
    f1_1 = 2 * 2 / (3 + 2)           # tp 2, 3 true, 2 predicted
    assert m["macro_f1"] == pytest.approx(100 * (f1_0 + f1_1) / 2)          # 73.33
    counting_absent = 100 * (f1_0 + f1_1 + 0.0) / 3                         # 48.89: the old, wrong number
    assert m["macro_f1"] != pytest.approx(counting_absent)
    assert m["accuracy"] == pytest.approx(100 * 4 / 6)
    assert m["mean_per_class_accuracy"] == pytest.approx(100 * (2 / 3 + 2 / 3) / 2) and m["n"] == 6


def test_metrics_on_a_perfect_and_a_constant_predictor():
    y = torch.tensor(np.repeat(np.arange(4), 5))
    perfect = classification_metrics(onehot_logits(y, 4), y, 4)
    assert perfect["accuracy"] == perfect["macro_f1"] == perfect["mean_per_class_accuracy"] == 100
    const = classification_metrics(onehot_logits([0] * 20, 4), y, 4)
    assert const["accuracy"] == 25 and const["mean_per_class_accuracy"] == 25
    assert const["macro_f1"] == pytest.approx(100 * (2 * 5 / (5 + 20)) / 4)   # class 0 only, 3 classes F1 = 0

"""k-NN (DINO's weighted k-NN, k 20, T 0.07) and linear-probe evaluation of a frozen encoder."""
from __future__ import annotations


from shared.metrics.features import extract_features
from shared.metrics.knn import knn_accuracy
from shared.metrics.linear_probe import train_linear_probe
from projects.accel_ssl.data import eval_sets, num_classes


def evaluate_encoder(encoder, cfg, device, linear_probe: bool | None = None, train_size=None, test_size=None) -> dict:
    """k-NN (and the linear probe if asked) on ``train_size`` / ``test_size`` images (default: eval.knn_*_size)."""
    e = cfg.eval
    train, test = eval_sets(cfg, train_size or e.knn_train_size, test_size or e.knn_test_size)
    ftr, ytr = extract_features(encoder, train, device, e.batch_size, cfg.data.num_workers, cfg.train.amp,
                                "features (train)")
    fte, yte = extract_features(encoder, test, device, e.batch_size, cfg.data.num_workers, cfg.train.amp,
                                "features (test)")
    c = num_classes(cfg)
    out = {"knn_top1": knn_accuracy(ftr, ytr, fte, yte, c, e.knn_k, e.knn_t), "n_knn_train": len(ytr),
           "n_test": len(yte)}
    if e.linear_probe if linear_probe is None else linear_probe:
        out["linear_top1"] = train_linear_probe(ftr, ytr, fte, yte, c, epochs=e.linear_probe_epochs)["top1"]
    return out

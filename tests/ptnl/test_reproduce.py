"""The demo's gathered rows as shared.report rows (projects/ptnl/results/demo.json)."""
from projects.ptnl.reproduce import result_rows
from shared.report import validate_rows


def test_result_rows_are_report_rows():
    gathered = [
        {"method": "coop", "noise_type": "random", "noise_rate": 0.5, "loss": "gce q=0.7", "seeds": 4,
         "mean": 77.61, "std": 0.93, "ensemble": 77.7, "train_noise": 0.5},
        {"method": "zeroshot", "noise_type": "-", "noise_rate": "-", "loss": "-", "seeds": 1, "mean": 77.8,
         "std": 0.0, "train_noise": None},
        {"method": "linear_probe", "noise_type": "random", "noise_rate": 0.0, "loss": "-", "seeds": 4,
         "mean": 73.2, "std": 2.1, "ensemble": 78.5, "train_noise": 0.0},
        {"method": "robust_upl", "noise_type": "-", "noise_rate": "-", "loss": "gce q=0.7", "seeds": 4,
         "mean": 76.9, "std": 0.3, "ensemble": 76.8, "train_noise": 0.194},
    ]
    rows = validate_rows(result_rows(gathered))
    assert [r["method"] for r in rows] == ["zero-shot CLIP (no training)", "linear probe (LogReg C=1e3)",
                                           "CoOp prompt tuning, GCE q=0.7", "robust UPL (16 random per class, GCE)"]
    coop = rows[2]
    assert (coop["setting"], coop["ours"], coop["std"]) == ("50 % wrong labels (random)", 77.61, 0.93)
    assert coop["note"] == "4 seeds; averaged-logits ensemble 77.7"
    assert rows[0]["std"] is None and rows[0]["setting"] == "no training"          # one seed: no spread
    assert rows[3]["setting"] == "zero-shot pseudo-labels (19.4 % wrong)"

"""Metrics against values computed by hand, and against scikit-learn where it has the function."""

import numpy as np
import pytest
from sklearn import metrics as skm

from reports.metrics import (auroc, choose_thresholds, compute_metrics, expected_calibration_error,
                             paired_bootstrap, patient_bootstrap_weights, weighted_auc)

NAN = np.nan


def test_auroc_by_hand():
    # positives score 0.8 and 0.4; negatives 0.6 and 0.2: pairs won (0.8>0.6, 0.8>0.2, 0.4>0.2) = 3 of 4
    assert auroc([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.75)
    # a tie counts one half
    assert auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # ignored labels are left out
    assert auroc([1, NAN, 0, 0], [0.8, 0.99, 0.6, 0.2]) == pytest.approx(1.0)
    assert auroc([1, 1, NAN], [0.2, 0.3, 0.1]) is None


def test_weighted_auc_equals_sklearn_with_sample_weights():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 2)  # ties included
    w = rng.integers(0, 4, (5, 200)).astype(float)
    ours = weighted_auc(y, p, w)
    for b in range(5):
        assert ours[b] == pytest.approx(skm.roc_auc_score(y, p, sample_weight=w[b]))


def test_patient_bootstrap_resamples_patients_not_images():
    patients = np.array(["a", "a", "a", "b", "c"])
    w = patient_bootstrap_weights(patients, 50, seed=0)
    assert w.shape == (50, 5)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all()  # a patient's images move together
    assert np.allclose(w[:, [0, 3, 4]].sum(axis=1), 3)  # three patients drawn each time


def test_compute_metrics_by_hand():
    y = np.array([[1, 0], [1, NAN], [0, 1], [0, 0]], float)
    p = np.array([[0.9, 0.2], [0.3, 0.9], [0.4, 0.7], [0.1, 0.6]], float)
    t = {"A": {"0.5": 0.5, "youden": 0.5, "f1": 0.5}, "B": {"0.5": 0.5, "youden": 0.5, "f1": 0.5}}
    m = compute_metrics(y, p, ["A", "B"], patients=["p1", "p2", "p3", "p4"], thresholds=t, n_boot=200)
    a, b = m["per_label"]["A"], m["per_label"]["B"]
    # A: positives 0.9, 0.3; negatives 0.4, 0.1 -> pairs won 3 of 4
    assert a["auroc"] == pytest.approx(0.75)
    # A at 0.5: predictions 1, 0, 0, 0 -> tp 1, fn 1, tn 2, fp 0
    assert {k: a["by_threshold"]["0.5"][k] for k in ("tp", "fn", "tn", "fp")} == {"tp": 1, "fn": 1, "tn": 2, "fp": 0}
    assert a["by_threshold"]["0.5"]["precision"] == 1.0 and a["by_threshold"]["0.5"]["recall"] == 0.5
    assert a["by_threshold"]["0.5"]["f1"] == pytest.approx(2 / 3)
    assert a["by_threshold"]["0.5"]["specificity"] == 1.0 and a["by_threshold"]["0.5"]["accuracy"] == 0.75
    # B: the second image is ignored; positive 0.7, negatives 0.2 and 0.6 -> AUROC 1
    assert b["n"] == 3 and b["ignored"] == 1 and b["auroc"] == pytest.approx(1.0)
    assert {k: b["by_threshold"]["0.5"][k] for k in ("tp", "fn", "tn", "fp")} == {"tp": 1, "fp": 1, "tn": 1, "fn": 0}
    s = m["summary"]
    assert s["auroc_macro"] == pytest.approx((0.75 + 1.0) / 2)
    # 7 present pairs; wrong: A image 2 (fn), B image 4 (fp) -> Hamming loss 2/7
    assert s["hamming_loss"] == pytest.approx(2 / 7)
    # exact match over present labels: image 1 right, 2 wrong, 3 right, 4 wrong
    assert s["subset_accuracy"] == pytest.approx(0.5)
    flat_y = np.array([1, 0, 1, 0, 1, 0, 0])
    flat_pred = np.array([1, 0, 0, 0, 1, 0, 1])
    assert s["f1_micro"] == pytest.approx(skm.f1_score(flat_y, flat_pred))
    assert s["f1_macro"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    # Brier of A by hand
    assert a["brier"] == pytest.approx(np.mean((np.array([0.9, 0.3, 0.4, 0.1]) - np.array([1, 1, 0, 0])) ** 2))
    assert s["auroc_macro_ci"][0] <= s["auroc_macro"] <= s["auroc_macro_ci"][1] or s["auroc_macro_ci"] is None


def test_summary_equals_sklearn_without_ignored_labels():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (300, 4)).astype(float)
    p = np.clip(y * 0.3 + rng.random((300, 4)) * 0.7, 0, 1)
    m = compute_metrics(y, p, list("ABCD"), n_boot=0)
    t = np.array([[m["per_label"][k]["by_threshold"]["f1"]["threshold"] for k in "ABCD"]])
    pred = (p >= t).astype(int)
    s = m["summary"]
    assert s["auroc_macro"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"))
    assert s["auroc_micro"] == pytest.approx(skm.roc_auc_score(y, p, average="micro"))
    assert s["auprc_macro"] == pytest.approx(skm.average_precision_score(y, p, average="macro"))
    assert s["hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred))
    assert s["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert s["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert s["f1_micro"] == pytest.approx(skm.f1_score(y, pred, average="micro"))


def test_single_class_and_empty_splits_are_undefined_not_half():
    y = np.array([[1, 0], [1, 1], [1, 0]], float)
    p = np.array([[0.2, 0.1], [0.5, 0.9], [0.7, 0.3]], float)
    m = compute_metrics(y, p, ["A", "B"], n_boot=50)
    assert m["per_label"]["A"]["auroc"] is None
    assert m["per_label"]["A"]["undefined"] == "only positives in this split"
    assert m["summary"]["undefined_labels"] == ["A"]
    assert m["summary"]["auroc_macro"] == pytest.approx(1.0)
    empty = compute_metrics(np.zeros((0, 2)), np.zeros((0, 2)), ["A", "B"], n_boot=50)
    assert empty["summary"]["auroc_macro"] is None and empty["summary"]["n_images"] == 0
    assert empty["per_label"]["A"]["undefined"] == "no labelled images in this split"


def test_thresholds_on_validation():
    y = np.array([[0], [0], [1], [1], [0], [1]], float)
    p = np.array([[0.1], [0.35], [0.4], [0.8], [0.7], [0.9]], float)
    t = choose_thresholds(y, p, ["A"])["A"]
    assert t["0.5"] == 0.5
    # Youden: threshold 0.4 gives tpr 1, fpr 1/3 (J = 2/3), the best
    assert t["youden"] == pytest.approx(0.4)
    # F1: at 0.4, tp 3, fp 1 -> F1 6/7, the best
    assert t["f1"] == pytest.approx(0.4)
    assert choose_thresholds(np.array([[1.0], [1.0]]), np.array([[0.3], [0.6]]), ["A"])["A"]["f1"] == 0.5


def test_expected_calibration_error_by_hand():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.05, 0.15, 0.95, 0.95])
    # bin [0, .1): p 0.05, rate 0 -> |0-0.05|; bin [.1, .2): p .15 rate 1 -> .85; bin [.9,1]: p .95 rate 1 -> .05
    assert expected_calibration_error(y, p) == pytest.approx((0.05 + 0.85 + 2 * 0.05) / 4)


def test_paired_bootstrap():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (200, 2)).astype(float)
    good = np.clip(y * 0.6 + rng.random((200, 2)) * 0.4, 0, 1)
    noise = rng.random((200, 2))
    patients = np.arange(200)
    same = paired_bootstrap(y, good, good, patients, n_boot=200)
    assert same["diff"] == 0 and same["p"] == 1.0
    better = paired_bootstrap(y, good, noise, patients, n_boot=200)
    assert better["diff"] > 0.3 and better["p"] < 0.05 and better["ci"][0] > 0

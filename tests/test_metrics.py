"""Metrics against values computed by hand, and against scikit-learn where it has the function."""

import numpy as np
import pytest
from sklearn import metrics as skm

from benchmark.evaluation.metrics import (
    auroc,
    choose_thresholds,
    compute_metrics,
    expected_calibration_error,
    score_split,
)

NAN = np.nan


def test_auroc_by_hand():
    # positives score 0.8 and 0.4; negatives 0.6 and 0.2: pairs won (0.8>0.6, 0.8>0.2, 0.4>0.2) = 3 of 4
    assert auroc([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.75)
    # a tie counts one half
    assert auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # ignored labels are left out
    assert auroc([1, NAN, 0, 0], [0.8, 0.99, 0.6, 0.2]) == pytest.approx(1.0)
    assert auroc([1, 1, NAN], [0.2, 0.3, 0.1]) is None


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


def test_studies_are_scored_with_their_views_reduced():
    import pandas as pd

    frame = pd.DataFrame({"path": ["s1/a", "s1/b", "s2/a", "s3/a", "s3/b"], "patient": ["p1", "p1", "p2", "p3", "p3"],
                          "study": ["s1", "s1", "s2", "s3", "s3"], "sex": ["M", "M", "F", "F", "F"],
                          "age": [50, 50, 70, 30, 30], "view": ["PA", "PA", "AP", "PA", "PA"]})
    y = np.array([[1], [1], [0], [0], [0]], float)
    p = np.array([[0.2], [0.9], [0.5], [0.3], [0.6]], float)
    by_max = score_split(frame, y, p, ["A"], unit="study", reduce="max", n_boot=0)
    # studies: s1 (positive) max 0.9; s2 0.5; s3 max 0.6 -> the positive outranks both negatives
    assert by_max["summary"]["unit"] == "study" and by_max["summary"]["n_images"] == 3
    assert by_max["per_label"]["A"]["auroc"] == 1.0
    by_mean = score_split(frame, y, p, ["A"], unit="study", reduce="mean", n_boot=0)
    # s1 mean 0.55, s2 0.5, s3 0.45 -> still 1.0; per image: positives 0.2, 0.9 vs 0.5, 0.3, 0.6 -> 3 of 6 pairs
    assert by_mean["per_label"]["A"]["auroc"] == 1.0
    by_image = score_split(frame, y, p, ["A"], unit="image", n_boot=0)
    assert by_image["per_label"]["A"]["auroc"] == pytest.approx(0.5) and by_image["summary"]["n_images"] == 5


def test_subgroups_by_sex_age_and_view_with_the_false_negative_rate():
    import pandas as pd

    rng = np.random.default_rng(7)
    n = 120
    frame = pd.DataFrame({"path": [f"i{k}" for k in range(n)], "patient": [f"p{k}" for k in range(n)],
                          "study": [f"s{k}" for k in range(n)], "sex": ["M"] * 80 + ["F"] * 40,
                          "age": [35] * 40 + [65] * 70 + [85] * 10, "view": ["PA", "AP"] * 60})
    y = rng.integers(0, 2, (n, 2)).astype(float)
    p = np.clip(y * 0.5 + rng.random((n, 2)) * 0.5, 0, 1)
    t = {lab: {"0.5": 0.5, "youden": 0.5, "f1": 0.6} for lab in ("A", "B")}
    m = score_split(frame, y, p, ["A", "B"], "image", "max", t, n_boot=100)
    groups = m["subgroups"]
    assert set(groups) == {"sex", "age", "view", "sex × age"}
    women = (frame["sex"] == "F").to_numpy()
    assert groups["sex"]["F"]["n"] == 40 and groups["sex"]["M"]["n"] == 80
    expected_auc = np.mean([skm.roc_auc_score(y[women, j], p[women, j]) for j in range(2)])
    assert groups["sex"]["F"]["auroc_macro"] == pytest.approx(expected_auc)
    low, high = groups["sex"]["F"]["auroc_macro_ci"]
    assert low <= expected_auc <= high
    fnr = [((p[women, j] < 0.6) & (y[women, j] == 1)).sum() / (y[women, j] == 1).sum() for j in range(2)]
    assert groups["sex"]["F"]["fnr_macro"] == pytest.approx(np.mean(fnr))
    assert groups["age"]["80 and over"] == {"n": 10, "patients": 10, "undefined": "fewer than 30 images"}
    assert groups["age"]["under 40"]["n"] == 40 and groups["view"]["AP"]["n"] == 60


def test_operating_points_are_chosen_on_validation_and_read_on_test():
    from benchmark.evaluation.metrics import operating_threshold

    # negatives 0.1 .. 1.0 (ten): specificity 0.90 needs nine below t -> just above 0.9
    neg = np.round(np.arange(1, 11) / 10, 1)
    y = np.r_[np.zeros(10), np.ones(4)]
    p = np.r_[neg, [0.2, 0.5, 0.95, 0.99]]
    t = operating_threshold(y, p, "specificity", 0.90)
    assert 0.9 < t < 0.9 + 1e-9 and ((p[y == 0] >= t).mean()) == pytest.approx(0.1)
    # sensitivity 0.75 of four positives: three at or above t -> t = 0.5
    assert operating_threshold(y, p, "sensitivity", 0.75) == 0.5
    rng = np.random.default_rng(3)
    yv, yt = rng.integers(0, 2, (400, 2)).astype(float), rng.integers(0, 2, (400, 2)).astype(float)
    pv, pt = np.clip(yv * 0.3 + rng.random((400, 2)) * 0.7, 0, 1), np.clip(yt * 0.3 + rng.random((400, 2)) * 0.7, 0, 1)
    chosen = choose_thresholds(yv, pv, ["A", "B"])
    on_val = compute_metrics(yv, pv, ["A", "B"], thresholds=chosen, n_boot=0, curves=False)
    assert all(on_val["per_label"][k]["by_threshold"]["spec95"]["specificity"] >= 0.95 for k in "AB")
    assert all(on_val["per_label"][k]["by_threshold"]["sens90"]["recall"] >= 0.90 for k in "AB")
    on_test = compute_metrics(yt, pt, ["A", "B"], thresholds=chosen, n_boot=0, curves=False)
    expected = np.mean([((pt[yt[:, j] == 1, j]) >= chosen[k]["spec90"]).mean() for j, k in enumerate("AB")])
    assert on_test["summary"]["sensitivity_at_spec90"] == pytest.approx(expected)  # the validation threshold, unchanged


def test_calibration_slope_and_intercept_against_sklearn():
    from sklearn.linear_model import LogisticRegression

    from benchmark.evaluation.metrics import calibration_fit

    rng = np.random.default_rng(5)
    logit = rng.normal(0, 1.5, 3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-logit))).astype(int)
    overconfident = 1 / (1 + np.exp(-2 * logit))  # twice the true logit: slope about 0.5
    slope, intercept = calibration_fit(y, overconfident)
    lp = 2 * logit
    fitted = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(lp[:, None], y)
    assert slope == pytest.approx(fitted.coef_[0, 0], rel=1e-5) and 0.4 < slope < 0.6
    # the intercept with the logit as offset: observed positives = expected positives
    assert np.sum(1 / (1 + np.exp(-(lp + intercept)))) == pytest.approx(y.sum(), rel=1e-6)
    slope, intercept = calibration_fit(y, 1 / (1 + np.exp(-logit)))  # calibrated
    assert abs(slope - 1) < 0.1 and abs(intercept) < 0.1

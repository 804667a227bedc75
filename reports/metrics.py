"""Multi-label metrics on scikit-learn, with ignored labels (NaN in y_true) left out for that label only.

Per label: AUROC (with a 95 % bootstrap CI that resamples patients, not images), AUPRC, accuracy, precision,
recall/sensitivity, specificity, F1, the confusion matrix, ROC and PR curves, Brier score, expected calibration
error and a reliability curve. Averages: macro (over labels where the metric is defined), micro (pooling all
present image-label pairs) and weighted (by positives). Hamming loss and exact-match subset accuracy over present
labels. A label with one class in the split has an undefined AUROC (None, with the reason), never a silent 0.5.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

THRESHOLD_KINDS = ("0.5", "youden", "f1")
SUMMARY_THRESHOLD = "f1"  # thresholds of the summary's F1, accuracy ...: F1-optimal on validation
ECE_BINS = 10


def _present(y, p):
    mask = ~np.isnan(y)
    return y[mask].astype(int), p[mask], mask


def auroc(y, p):
    """AUROC of present labels, or None if only one class is present."""
    y, p, _ = _present(np.asarray(y, float), np.asarray(p, float))
    if len(np.unique(y)) < 2:
        return None
    return float(skm.roc_auc_score(y, p))


def weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for many weightings of the same scores at once: weights (B, n) -> (B,), NaN where undefined.
    Equals sklearn's roc_auc_score(y, p, sample_weight=w) for each row (ties count one half)."""
    order = np.argsort(p, kind="mergesort")
    y, p, weights = y[order], p[order], weights[:, order]
    _, group = np.unique(p, return_inverse=True)
    n_groups = group.max() + 1 if len(group) else 0
    out = np.full(len(weights), np.nan)
    for b, w in enumerate(weights):
        wn, wp = w * (1 - y), w * y
        neg_group = np.bincount(group, wn, minlength=n_groups)
        below = np.cumsum(neg_group) - neg_group
        total_p, total_n = wp.sum(), wn.sum()
        if total_p > 0 and total_n > 0:
            out[b] = float(np.sum(wp * (below[group] + 0.5 * neg_group[group])) / (total_p * total_n))
    return out


def patient_bootstrap_weights(patients, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_images) weights: how often each image's patient was drawn in each resample of patients."""
    patients = np.asarray(patients).astype(str)
    unique, inverse = np.unique(patients, return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(unique), size=(n_boot, len(unique)))
    counts = np.zeros((n_boot, len(unique)))
    for b in range(n_boot):
        counts[b] = np.bincount(draws[b], minlength=len(unique))
    return counts[:, inverse]


def bootstrap_auroc(y_true, y_prob, weights) -> np.ndarray:
    """(n_boot, L) AUROC per resample and label (NaN where undefined)."""
    out = np.full((len(weights), y_true.shape[1]), np.nan)
    for j in range(y_true.shape[1]):
        mask = ~np.isnan(y_true[:, j])
        if len(np.unique(y_true[mask, j])) < 2:
            continue
        out[:, j] = weighted_auc(y_true[mask, j].astype(int), y_prob[mask, j], weights[:, mask])
    return out


def _ci(values) -> list | None:
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if len(values) < 10:
        return None
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def youden_threshold(y, p) -> float:
    fpr, tpr, thr = skm.roc_curve(y, p)
    i = int(np.argmax(tpr - fpr))
    return float(min(thr[i], 1.0))


def f1_threshold(y, p) -> float:
    prec, rec, thr = skm.precision_recall_curve(y, p)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0)[:-1]
    return float(thr[int(np.argmax(f1))]) if len(thr) else 0.5


def choose_thresholds(y_val, p_val, labels) -> dict:
    """Per label: 0.5, Youden's J and the F1-optimal threshold, chosen on validation (0.5 where undefined)."""
    out = {}
    for j, label in enumerate(labels):
        y, p, _ = _present(y_val[:, j], p_val[:, j])
        defined = len(np.unique(y)) == 2
        out[label] = {"0.5": 0.5,
                      "youden": youden_threshold(y, p) if defined else 0.5,
                      "f1": f1_threshold(y, p) if defined else 0.5}
    return out


def binary_metrics(y, pred) -> dict:
    """Counts and rates of one label's thresholded predictions (present rows only)."""
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
        "accuracy": float(skm.accuracy_score(y, pred)) if len(y) else None,
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "specificity": float(tn / (tn + fp)) if tn + fp else None,
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
    }


def expected_calibration_error(y, p, bins: int = ECE_BINS) -> float:
    """Sum over equal-width probability bins of |bin share| x |observed rate - mean probability|."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(y[in_bin].mean() - p[in_bin].mean())
    return float(ece)


def _mean(values):
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else None


def _curve(x, y, points: int = 101) -> dict:
    """Curves thinned to at most `points` points for the report."""
    idx = np.unique(np.linspace(0, len(x) - 1, min(points, len(x))).astype(int))
    return {"x": [float(v) for v in np.asarray(x)[idx]], "y": [float(v) for v in np.asarray(y)[idx]]}


def compute_metrics(y_true, y_prob, labels, patients=None, thresholds=None, n_boot: int = 1000,
                    seed: int = 0, curves: bool = True) -> dict:
    """All metrics of one split. `thresholds` as from choose_thresholds (default: 0.5 for every kind)."""
    y_true = np.asarray(y_true, float)
    y_prob = np.asarray(y_prob, float)
    n, L = y_true.shape
    thresholds = thresholds or {label: {k: 0.5 for k in THRESHOLD_KINDS} for label in labels}
    patients = np.arange(n) if patients is None else np.asarray(patients)
    per_label = {}
    boot = None
    if n and n_boot:
        boot = bootstrap_auroc(y_true, y_prob, patient_bootstrap_weights(patients, n_boot, seed))
    for j, label in enumerate(labels):
        y, p, mask = _present(y_true[:, j], y_prob[:, j])
        positives = int(y.sum())
        entry = {"n": int(len(y)), "positives": positives, "ignored": int((~mask).sum())}
        if len(y) == 0:
            entry.update({"auroc": None, "undefined": "no labelled images in this split"})
        elif len(np.unique(y)) < 2:
            entry.update({"auroc": None, "auprc": None,
                          "undefined": f"only {'positives' if positives else 'negatives'} in this split"})
        else:
            entry["auroc"] = float(skm.roc_auc_score(y, p))
            entry["auroc_ci"] = _ci(boot[:, j]) if boot is not None else None
            entry["auprc"] = float(skm.average_precision_score(y, p))
            if curves:
                fpr, tpr, _ = skm.roc_curve(y, p)
                prec, rec, _ = skm.precision_recall_curve(y, p)
                entry["roc"] = _curve(fpr, tpr)
                entry["pr"] = _curve(rec[::-1], prec[::-1])
        if len(y):
            entry["brier"] = float(skm.brier_score_loss(y, p, pos_label=1)) if len(np.unique(y)) > 1 else float(np.mean((p - y) ** 2))
            entry["ece"] = expected_calibration_error(y, p)
            if curves:
                frac, mean_p = calibration_curve(y, p, n_bins=ECE_BINS, strategy="uniform")
                entry["reliability"] = {"mean_predicted": mean_p.tolist(), "observed": frac.tolist()}
            entry["by_threshold"] = {}
            for kind in THRESHOLD_KINDS:
                t = thresholds[label][kind]
                entry["by_threshold"][kind] = {"threshold": t, **binary_metrics(y, (p >= t).astype(int))}
        per_label[label] = entry
    ctx = SplitScores(y_true, y_prob, list(labels), per_label, thresholds, boot)
    summary = {"n_images": int(n), "n_patients": int(len(np.unique(patients.astype(str)))) if n else 0,
               "labels": list(labels), "undefined_labels": [lab for lab in labels if per_label[lab].get("auroc") is None],
               "threshold_kind": SUMMARY_THRESHOLD, "bootstrap": int(n_boot) if boot is not None else 0}
    for metric in SUMMARY_METRICS:
        value = metric.compute(ctx)
        if metric.ci:
            value, summary[f"{metric.key}_ci"] = value
        summary[metric.key] = value
    return {"summary": summary, "per_label": per_label}


class SplitScores:
    """What the summary metrics of one split are computed from: the arrays, the per-label entries, the
    thresholds, and the bootstrap's per-label AUROCs (or None)."""

    def __init__(self, y_true, y_prob, labels, per_label, thresholds, boot):
        self.y_true, self.y_prob, self.labels, self.per_label, self.boot = y_true, y_prob, labels, per_label, boot
        self.present = ~np.isnan(y_true)
        self.defined = [lab for lab in labels if per_label[lab].get("auroc") is not None]
        self.flat_y = y_true[self.present].astype(int)
        self.flat_p = y_prob[self.present]
        self.any = bool(len(y_true) and self.present.any())
        if self.any:
            t = np.array([thresholds[lab][SUMMARY_THRESHOLD] for lab in labels])
            self.pred = (y_prob >= t).astype(int)
            self.flat_pred = self.pred[self.present]
        self.at_threshold = [per_label[lab]["by_threshold"][SUMMARY_THRESHOLD] for lab in labels
                             if "by_threshold" in per_label[lab]]
        self.positives = np.array([per_label[lab]["positives"] for lab in labels if "by_threshold" in per_label[lab]],
                                  float)

    def label_mean(self, key: str):
        """Mean over labels of a per-label value (where defined)."""
        return _mean([self.per_label[lab].get(key) for lab in self.labels])

    def threshold_mean(self, key: str):
        """Mean over labels of a thresholded value (F1-optimal thresholds chosen on validation)."""
        return _mean([m[key] for m in self.at_threshold]) if self.any else None

    def both_classes(self) -> bool:
        return len(np.unique(self.flat_y)) == 2


def _auroc_macro(c: SplitScores):
    value = _mean([c.per_label[lab]["auroc"] for lab in c.defined])
    ci = None
    if c.boot is not None and c.defined:
        idx = [c.labels.index(lab) for lab in c.defined]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # resamples where no label is defined
            ci = _ci(np.nanmean(c.boot[:, idx], axis=1))
    return value, ci


def _auroc_weighted(c: SplitScores):
    weights = np.array([c.per_label[lab]["positives"] for lab in c.defined], float)
    if not c.defined or not weights.sum():
        return None
    return float(np.average([c.per_label[lab]["auroc"] for lab in c.defined], weights=weights))


def _subset_accuracy(c: SplitScores):
    if not c.any:
        return None
    rows = c.present.any(axis=1)
    exact = np.all((c.pred == np.nan_to_num(c.y_true).astype(int)) | ~c.present, axis=1)
    return float(exact[rows].mean()) if rows.any() else None


@dataclass(frozen=True)
class Metric:
    """One summary metric of a split: its key in metrics.json (``test_<key>`` in summary.csv), its heading in the
    report, how it is computed, and how it is shown. The one list below is read by compute_metrics, the summary
    table (summary.csv / summary.json) and both report pages: adding a metric is one entry."""

    key: str
    title: str
    compute: Callable  # SplitScores -> value (or (value, [low, high]) when `ci`)
    ci: bool = False  # also has `<key>_ci`
    in_table: bool = True  # a column of the comparison table (all are on each run's page)
    lower_is_better: bool = False
    digits: int = 3
    note: str = ""


SUMMARY_METRICS = (
    Metric("auroc_macro", "mean AUROC", _auroc_macro, ci=True,
           note="mean over labels of the per-label AUROC"),
    Metric("auroc_micro", "micro AUROC", lambda c: float(skm.roc_auc_score(c.flat_y, c.flat_p))
           if c.both_classes() else None, in_table=False, note="AUROC of all labelled image-label pairs pooled"),
    Metric("auroc_weighted", "weighted AUROC", _auroc_weighted, in_table=False,
           note="mean of per-label AUROCs weighted by positives"),
    Metric("auprc_macro", "AUPRC", lambda c: _mean([c.per_label[lab]["auprc"] for lab in c.defined]),
           note="mean over labels of the average precision"),
    Metric("auprc_micro", "micro AUPRC", lambda c: float(skm.average_precision_score(c.flat_y, c.flat_p))
           if c.both_classes() else None, in_table=False),
    Metric("f1_macro", "F1 macro", lambda c: c.threshold_mean("f1")),
    Metric("f1_micro", "F1 micro", lambda c: float(skm.f1_score(c.flat_y, c.flat_pred, zero_division=0))
           if c.any else None),
    Metric("f1_weighted", "F1 weighted", lambda c: float(np.average([m["f1"] for m in c.at_threshold],
                                                                    weights=c.positives))
           if c.any and c.positives.sum() else None, in_table=False),
    Metric("precision_macro", "precision", lambda c: c.threshold_mean("precision"), in_table=False),
    Metric("recall_macro", "recall", lambda c: c.threshold_mean("recall"), in_table=False),
    Metric("specificity_macro", "specificity", lambda c: c.threshold_mean("specificity"), in_table=False),
    Metric("accuracy_macro", "accuracy", lambda c: c.threshold_mean("accuracy"), in_table=False),
    Metric("hamming_loss", "Hamming loss", lambda c: float(skm.hamming_loss(c.flat_y, c.flat_pred))
           if c.any else None, lower_is_better=True, note="share of labelled image-label pairs predicted wrong"),
    Metric("subset_accuracy", "subset acc.", _subset_accuracy,
           note="images whose every labelled finding is predicted right"),
    Metric("ece_macro", "ECE", lambda c: c.label_mean("ece") if c.any else None, lower_is_better=True,
           note="expected calibration error, 10 bins, mean over labels"),
    Metric("brier_macro", "Brier", lambda c: c.label_mean("brier") if c.any else None, in_table=False,
           lower_is_better=True),
)


def paired_bootstrap(y_true, prob_a, prob_b, patients, n_boot: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap (resampling patients) of the difference in macro AUROC, a minus b, on the same images.
    Returns the observed difference, its 95 % CI and a two-sided p-value."""
    y_true = np.asarray(y_true, float)
    weights = patient_bootstrap_weights(patients, n_boot, seed)
    a = bootstrap_auroc(y_true, np.asarray(prob_a, float), weights)
    b = bootstrap_auroc(y_true, np.asarray(prob_b, float), weights)
    cols = ~np.all(np.isnan(a), axis=0) & ~np.all(np.isnan(b), axis=0)
    if not cols.any():
        return {"diff": None, "ci": None, "p": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        diffs = np.nanmean(a[:, cols], axis=1) - np.nanmean(b[:, cols], axis=1)
    diffs = diffs[~np.isnan(diffs)]
    observed = _mean([auroc(y_true[:, j], prob_a[:, j]) for j in np.flatnonzero(cols)])
    observed_b = _mean([auroc(y_true[:, j], prob_b[:, j]) for j in np.flatnonzero(cols)])
    diff = None if observed is None or observed_b is None else observed - observed_b
    p = float(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean()))) if len(diffs) else None
    return {"diff": diff, "ci": _ci(diffs), "p": p}

"""Multi-label metrics on scikit-learn, with ignored labels (NaN in y_true) left out for that label only.

Per label: AUROC (with a 95 % bootstrap CI that resamples patients, not images, with the resamples shared by every
run scored on the same test set: see benchmark.evaluation.stats.PatientBootstrap), AUPRC, accuracy, precision,
recall/sensitivity, specificity, F1, the confusion matrix, ROC and PR curves, Brier score, expected calibration
error and a reliability curve. Averages: macro (over labels where the metric is defined), micro (pooling all
present image-label pairs) and weighted (by positives). Hamming loss and exact-match subset accuracy over present
labels. A label with one class in the split has an undefined AUROC (None, with the reason), never a silent 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from benchmark.evaluation.scoring import MIN_GROUP, Scored, score_units
from benchmark.evaluation.stats import PatientBootstrap, percentile_ci, resampled_aurocs
from benchmark.evaluation.subgroups import attribute_gaps, attributes

# operating points: the threshold at which validation reaches a specificity (or sensitivity), applied unchanged to
# test and external sets, where the other rate is read
OPERATING_POINTS = {"spec90": ("specificity", 0.90), "spec95": ("specificity", 0.95),
                    "sens90": ("sensitivity", 0.90), "sens95": ("sensitivity", 0.95)}
THRESHOLD_KINDS = ("0.5", "youden", "f1", *OPERATING_POINTS)
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


def _ci(values) -> list | None:
    return percentile_ci(values)


def youden_threshold(y, p) -> float:
    fpr, tpr, thr = skm.roc_curve(y, p)
    i = int(np.argmax(tpr - fpr))
    return float(min(thr[i], 1.0))


def f1_threshold(y, p) -> float:
    prec, rec, thr = skm.precision_recall_curve(y, p)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0)[:-1]
    return float(thr[int(np.argmax(f1))]) if len(thr) else 0.5


def operating_threshold(y, p, rate: str, target: float) -> float:
    """The threshold (predict positive at p >= t) at which these units reach `target` specificity (the lowest such
    t) or sensitivity (the highest such t)."""
    if rate == "specificity":
        neg = np.sort(p[y == 0])
        k = int(np.ceil(target * len(neg)))  # this many negatives must fall below t
        return float(np.nextafter(neg[k - 1], np.inf)) if k else float(neg[0])
    pos = np.sort(p[y == 1])
    return float(pos[len(pos) - int(np.ceil(target * len(pos)))])  # this many positives at or above t


def choose_thresholds(y_val, p_val, labels) -> dict:
    """Per label, chosen on validation (0.5 where undefined): 0.5, Youden's J, the F1-optimal threshold, and the
    operating points (OPERATING_POINTS)."""
    out = {}
    for j, label in enumerate(labels):
        y, p, _ = _present(y_val[:, j], p_val[:, j])
        defined = len(np.unique(y)) == 2
        out[label] = {"0.5": 0.5,
                      "youden": youden_threshold(y, p) if defined else 0.5,
                      "f1": f1_threshold(y, p) if defined else 0.5}
        for kind, (rate, target) in OPERATING_POINTS.items():
            out[label][kind] = operating_threshold(y, p, rate, target) if defined else 0.5
    return out


def calibration_fit(y, p) -> tuple[float | None, float | None]:
    """Calibration slope and intercept (calibration-in-the-large): the logistic regression of the outcome on the
    logit of the predicted probability (slope), and with that logit as an offset (intercept). Perfect calibration
    is slope 1, intercept 0; a slope below 1 means overconfident predictions. Newton's method, no penalty."""
    y = np.asarray(y, float)
    lp = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    if len(np.unique(y)) < 2:
        return None, None

    def newton(design, offset):
        """The fitted coefficients, or None where they do not converge (separated classes)."""
        beta = np.zeros(design.shape[1])
        for _ in range(50):
            mu = 1 / (1 + np.exp(-np.clip(design @ beta + offset, -35, 35)))
            w = np.maximum(mu * (1 - mu), 1e-12)
            step = np.linalg.lstsq(design.T @ (design * w[:, None]), design.T @ (y - mu), rcond=None)[0]
            beta += step
            if np.abs(step).max() < 1e-10:
                return beta
        return None

    slope = newton(np.column_stack([np.ones_like(lp), lp]), 0.0)
    intercept = newton(np.ones((len(lp), 1)), lp)
    return (float(slope[1]) if slope is not None else None, float(intercept[0]) if intercept is not None else None)


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
                    curves: bool = True, boot: PatientBootstrap | None = None, meta=None, unit: str = "image",
                    reduce: str | None = None, min_positives: int = 1) -> dict:
    """All metrics of one split, on its scored units (images or studies: see benchmark.evaluation.scoring). `thresholds` as
    from choose_thresholds (default: 0.5 for every kind). Confidence intervals come from `n_boot` patient
    resamples in which every label keeps both classes (or `boot`, shared with other callers). With `meta`
    (sex, age, view of each unit) the split's subgroups are scored too. A label with fewer than `min_positives`
    positive or negative patients gets no AUROC or AUPRC ("too few positives", with its counts) and stays out of
    every macro average and the bootstrap's completeness rule (1: both classes are enough)."""
    y_true = np.asarray(y_true, float)
    y_prob = np.asarray(y_prob, float)
    n, L = y_true.shape
    thresholds = thresholds or {label: {k: 0.5 for k in THRESHOLD_KINDS} for label in labels}
    patients = np.arange(n).astype(str) if patients is None else np.asarray(patients).astype(str)
    per_label = {}
    if boot is None and n and n_boot:
        boot = PatientBootstrap(patients, y_true, n_boot, min_patients=min_positives)
    boot_aurocs = resampled_aurocs(y_true, y_prob, boot) if boot is not None and boot.n else None
    for j, label in enumerate(labels):
        y, p, mask = _present(y_true[:, j], y_prob[:, j])
        positives = int(y.sum())
        entry = {"n": int(len(y)), "positives": positives, "ignored": int((~mask).sum()),
                 "positive_patients": int(len(np.unique(patients[mask][y == 1]))),
                 "negative_patients": int(len(np.unique(patients[mask][y == 0])))}
        if len(y):  # AUPRC's no-skill baseline is the prevalence
            entry["prevalence"] = entry["auprc_baseline"] = positives / len(y)
        few = min(entry["positive_patients"], entry["negative_patients"]) < max(1, min_positives)
        if len(y) == 0:
            entry.update({"auroc": None, "undefined": f"no labelled {unit}s in this split"})
        elif len(np.unique(y)) < 2:
            entry.update({"auroc": None, "auprc": None,
                          "undefined": f"only {'positives' if positives else 'negatives'} in this split"})
        elif few:
            entry.update({"auroc": None, "auprc": None, "too_few": True, "undefined":
                          f"too few positives: {entry['positive_patients']} positive and "
                          f"{entry['negative_patients']} negative patients (at least {min_positives} of each)"})
        else:
            entry["auroc"] = float(skm.roc_auc_score(y, p))
            entry["auroc_ci"] = _ci(boot_aurocs[:, j]) if boot_aurocs is not None else None
            entry["auprc"] = float(skm.average_precision_score(y, p))
            if curves:
                fpr, tpr, _ = skm.roc_curve(y, p)
                prec, rec, _ = skm.precision_recall_curve(y, p)
                entry["roc"] = _curve(fpr, tpr)
                entry["pr"] = _curve(rec[::-1], prec[::-1])
        if len(y):
            entry["brier"] = (float(skm.brier_score_loss(y, p, pos_label=1)) if len(np.unique(y)) > 1
                              else float(np.mean((p - y) ** 2)))
            entry["ece"] = expected_calibration_error(y, p)
            if curves:
                frac, mean_p = calibration_curve(y, p, n_bins=ECE_BINS, strategy="uniform")
                entry["reliability"] = {"mean_predicted": mean_p.tolist(), "observed": frac.tolist()}
            entry["by_threshold"] = {}
            entry["calibration_slope"], entry["calibration_intercept"] = calibration_fit(y, p)
            for kind in THRESHOLD_KINDS:
                if kind not in thresholds[label]:  # thresholds.json of a run made before the kind
                    continue
                t = thresholds[label][kind]
                entry["by_threshold"][kind] = {"threshold": t, **binary_metrics(y, (p >= t).astype(int))}
        per_label[label] = entry
    ctx = SplitScores(y_true, y_prob, list(labels), per_label, thresholds, boot_aurocs)
    summary = {"n_images": int(n), "n_patients": int(len(np.unique(patients))) if n else 0, "unit": unit,
               "reduce": reduce, "labels": list(labels),
               "undefined_labels": [lab for lab in labels if per_label[lab].get("auroc") is None],
               "threshold_kind": SUMMARY_THRESHOLD,
               "bootstrap": boot.record() if boot is not None else {"resamples": 0}}
    for metric in SUMMARY_METRICS:
        value = metric.compute(ctx)
        if metric.ci:
            value, summary[f"{metric.key}_ci"] = value
        summary[metric.key] = value
    if curves and ctx.both_classes():
        fpr, tpr, _ = skm.roc_curve(ctx.flat_y, ctx.flat_p)
        prec, rec, _ = skm.precision_recall_curve(ctx.flat_y, ctx.flat_p)
        summary["roc_micro"], summary["pr_micro"] = _curve(fpr, tpr), _curve(rec[::-1], prec[::-1])
    out = {"summary": summary, "per_label": per_label}
    if meta is not None:
        out["subgroups"] = subgroup_metrics(Scored(y_true, y_prob, patients, np.arange(n), meta, unit, reduce),
                                            list(labels), thresholds, n_boot)
        out["subgroup_gaps"] = attribute_gaps(y_true, y_prob, meta, labels, thresholds, boot, min_positives,
                                              SUMMARY_THRESHOLD)
    return out


def score_split(frame, truth, probs, labels, unit: str = "image", reduce: str = "max", thresholds=None,
                n_boot: int = 1000, curves: bool = True, min_positives: int = 1) -> dict:
    """The metrics of one split from its per-image prediction table (path, patient, study, sex, age, view) and
    arrays, at its scoring unit (image or study), with subgroups."""
    scored = score_units(frame, truth, probs, unit, reduce)
    return compute_metrics(scored.truth, scored.probs, labels, scored.patients, thresholds, n_boot=n_boot,
                           curves=curves, meta=scored.meta, unit=scored.unit, reduce=scored.reduce,
                           min_positives=min_positives)


def subgroup_metrics(scored: Scored, labels, thresholds, n_boot: int) -> dict:
    """For each attribute the split has (sex, age band, view) and each of its groups: the number of units and
    patients, the macro AUROC with its CI, and at the chosen threshold the false-negative rate (macro over labels
    with positives in the group). A group too small, or without a label that has both classes, says so instead."""
    out = {}
    for attribute, groups in attributes(scored.meta).items():
        out[attribute] = {}
        values = groups.to_numpy()
        for group in sorted(g for g in groups.dropna().unique()):
            mask = values == group
            y, p, pat = scored.truth[mask], scored.probs[mask], scored.patients[mask]
            entry = {"n": int(mask.sum()), "patients": int(len(np.unique(pat)))}
            out[attribute][str(group)] = entry
            if entry["n"] < MIN_GROUP:
                entry["undefined"] = f"fewer than {MIN_GROUP} {scored.unit}s"
                continue
            aurocs, fnrs, by_label = [], {}, {}
            for j, label in enumerate(labels):
                yj, pj, _ = _present(y[:, j], p[:, j])
                if len(np.unique(yj)) == 2:
                    aurocs.append(float(skm.roc_auc_score(yj, pj)))
                    by_label[label] = aurocs[-1]
                if yj.sum():
                    fnrs[label] = float(((pj < thresholds[label][SUMMARY_THRESHOLD]) & (yj == 1)).sum() / yj.sum())
            entry["fnr"] = fnrs
            entry["auroc"] = by_label  # per label: the report compares groups over the labels they share
            entry["fnr_macro"] = _mean(list(fnrs.values()))
            if not aurocs:
                entry["auroc_macro"] = None
                entry["undefined"] = "no label has both classes in this group"
                continue
            entry["auroc_macro"] = float(np.mean(aurocs))
            boot = PatientBootstrap(pat, y, n_boot) if n_boot else None
            if boot is not None and boot.n:
                resampled = resampled_aurocs(y, p, boot)
                entry["auroc_macro_ci"] = _ci(resampled[:, boot.defined].mean(axis=1))
            else:
                entry["auroc_macro_ci"] = None
    return out


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

    def operating_mean(self, kind: str, key: str):
        """Mean over labels with an AUROC of a rate at an operating point's threshold (chosen on validation)."""
        return _mean([(self.per_label[lab].get("by_threshold") or {}).get(kind, {}).get(key)
                      for lab in self.defined])

    def both_classes(self) -> bool:
        return len(np.unique(self.flat_y)) == 2


def _auroc_macro(c: SplitScores):
    """The mean over defined labels, and its CI over the resamples (in each of which every such label has both
    classes, so that each resample averages the same labels)."""
    value = _mean([c.per_label[lab]["auroc"] for lab in c.defined])
    ci = None
    if c.boot is not None and c.defined:
        idx = [c.labels.index(lab) for lab in c.defined]
        ci = _ci(c.boot[:, idx].mean(axis=1))
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
    Metric("calibration_slope_macro", "calibration slope", lambda c: c.label_mean("calibration_slope"),
           in_table=False,
           note="logistic recalibration slope, mean over labels (1: calibrated; below 1: overconfident)"),
    Metric("calibration_intercept_macro", "calibration intercept", lambda c: c.label_mean("calibration_intercept"),
           in_table=False, note="calibration-in-the-large, mean over labels (0: calibrated)"),
    *(Metric(f"{'sensitivity' if rate == 'specificity' else 'specificity'}_at_{kind}",
             f"{'sensitivity' if rate == 'specificity' else 'specificity'} at {rate[:4]}. {target:.2f}",
             lambda c, kind=kind, key=("recall" if rate == "specificity" else "specificity"):
             c.operating_mean(kind, key),
             in_table=False, note=f"mean over labels; each label's threshold gives {rate} {target:.2f} on validation")
      for kind, (rate, target) in OPERATING_POINTS.items()),
)

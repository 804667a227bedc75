"""Subgroups on equal terms: gaps between the groups of an attribute, each group averaged over the same labels, with
patient-bootstrap confidence intervals.

Within an attribute (sex, age band, view, sex x age band) only groups with at least `MIN_GROUP` scored units take
part. The mean AUROC of every group is over the labels with at least `min_positives` positive and as many negative
patients in *every* group; the per-finding false-negative rate (at each label's chosen threshold) over the labels
with that many positive patients in every group. A label present in one group only therefore cannot make a gap.

Where the labels include "No Finding", the underdiagnosis rate of Seyyed-Kalantari et al. (Nature Medicine 2021)
is given too: the share of units with a finding (No Finding = 0) that the model calls "No Finding" at its chosen
threshold. Elsewhere only the per-finding FNR gap is shown, under that name.

Every interval comes from one set of patient resamples of the whole split (the split's `PatientBootstrap`), so that a
patient's units move together, across groups too (a patient may have AP and PA views): each resample's gap is the
resampled value of the higher group minus the lower one's (the groups as ranked on the full set).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.evaluation.scoring import MIN_GROUP, subgroups
from benchmark.evaluation.stats import PatientBootstrap, percentile_ci, resampled_auc

NO_FINDING = "No Finding"
INTERSECTION = "sex × age"


def attributes(meta: pd.DataFrame) -> dict[str, pd.Series]:
    """The single attributes (benchmark.evaluation.scoring.subgroups) and the intersection of sex and age band."""
    out = subgroups(meta)
    if "sex" in out and "age" in out:
        both = out["sex"].notna() & out["age"].notna()
        out[INTERSECTION] = (out["sex"].astype(str) + " " + out["age"].astype(str)).where(both)
    return out


def _patients_with(inverse, mask, n_patients) -> np.ndarray:
    return np.bincount(inverse[mask], minlength=n_patients) > 0


class _Resampled:
    """Resampled rates and AUROCs of a subset of units, on the split's patient resamples."""

    def __init__(self, boot: PatientBootstrap):
        self.boot = boot

    def auc(self, y, p, mask) -> np.ndarray:
        return resampled_auc(y[mask], p[mask], self.boot.inverse[mask], self.boot.counts, self.boot.counts_t)

    def share(self, hit, of) -> np.ndarray:
        """Per resample: the weighted share of the units in `of` that are in `hit` (both boolean masks)."""
        n = self.boot.n_patients
        num = np.bincount(self.boot.inverse[hit & of], minlength=n) @ self.boot.counts_t
        den = np.bincount(self.boot.inverse[of], minlength=n) @ self.boot.counts_t
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den


def _gap(values: dict, resampled: dict) -> dict:
    """The highest group minus the lowest, with the percentile CI of the resampled gap."""
    order = sorted(values, key=values.get)  # two distinct groups even where all values tie
    hi, lo = order[-1], order[0]
    return {"value": values[hi] - values[lo], "high": hi, "low": lo,
            "ci": percentile_ci(resampled[hi] - resampled[lo]) if resampled else None}


def attribute_gaps(truth, probs, meta, labels, thresholds, boot: PatientBootstrap | None, min_positives: int = 1,
                   threshold_kind: str = "f1") -> dict:
    """{attribute: gaps} for every attribute with at least two groups of MIN_GROUP units (see the module)."""
    truth = np.asarray(truth, float)
    probs = np.asarray(probs, float)
    labels = list(labels)
    boot = boot if boot is not None and boot.n else None
    res = _Resampled(boot) if boot else None
    t = np.array([thresholds[lab][threshold_kind] for lab in labels]) if thresholds else np.full(len(labels), 0.5)
    out = {}
    for attribute, groups in attributes(meta).items():
        values = groups.to_numpy(dtype=object)
        masks = {str(g): values == g for g in sorted(groups.dropna().unique())}
        masks = {g: m for g, m in masks.items() if m.sum() >= MIN_GROUP}
        if len(masks) < 2:
            continue
        out[attribute] = _one_attribute(truth, probs, labels, t, masks, res, boot, min_positives)
    return out


def _one_attribute(truth, probs, labels, t, masks, res, boot, min_positives) -> dict:
    """Counts are of patients where there are resamples (of units without)."""
    patient = boot.inverse if boot else None
    n_pat = boot.n_patients if boot else 0

    def count(mask, value):
        m = mask & (truth_j == value)
        return int(_patients_with(patient, m, n_pat).sum()) if boot else int(m.sum())

    auroc_labels, fnr_labels = [], []
    for j in range(len(labels)):
        truth_j = truth[:, j]
        pos = [count(m, 1) for m in masks.values()]
        neg = [count(m, 0) for m in masks.values()]
        if min(pos) >= min_positives and min(neg) >= min_positives:
            auroc_labels.append(j)
        if min(pos) >= min_positives:
            fnr_labels.append(j)
    entry = {"groups": {g: {"n": int(m.sum())} for g, m in masks.items()},
             "auroc_labels": [labels[j] for j in auroc_labels], "fnr_labels": [labels[j] for j in fnr_labels]}
    present = ~np.isnan(truth)
    if auroc_labels:
        from sklearn.metrics import roc_auc_score

        point, boots = {}, {}
        for g, m in masks.items():
            point[g] = float(np.mean([roc_auc_score(truth[m & present[:, j], j], probs[m & present[:, j], j])
                                      for j in auroc_labels]))
            if res:
                boots[g] = np.mean([res.auc(truth[:, j], probs[:, j], m & present[:, j]) for j in auroc_labels], axis=0)
            entry["groups"][g]["auroc"] = point[g]
            entry["groups"][g]["auroc_ci"] = percentile_ci(boots[g]) if res else None
        entry["auroc_gap"] = _gap(point, boots)
        worst = min(point, key=point.get)
        entry["worst_auroc"] = {"group": worst, "value": point[worst], "ci": entry["groups"][worst]["auroc_ci"]}
    if fnr_labels:
        point, boots = {}, {}
        for g, m in masks.items():
            rates, resampled = [], []
            for j in fnr_labels:
                positive = m & (truth[:, j] == 1)
                missed = probs[:, j] < t[j]
                rates.append(float((positive & missed).sum() / positive.sum()))
                if res:
                    resampled.append(res.share(missed, positive))
            point[g] = float(np.mean(rates))
            if res:
                boots[g] = np.mean(resampled, axis=0)
            entry["groups"][g]["fnr"] = point[g]
        entry["fnr_gap"] = _gap(point, boots)
    if NO_FINDING in labels:
        entry.update(_underdiagnosis(truth, probs, labels.index(NO_FINDING), t, masks, res))
    return entry


def _underdiagnosis(truth, probs, j, t, masks, res) -> dict:
    """Seyyed-Kalantari et al.: of the units with a finding (No Finding = 0), the share called No Finding."""
    point, boots = {}, {}
    called = probs[:, j] >= t[j]
    for g, m in masks.items():
        with_finding = m & (truth[:, j] == 0)
        if not with_finding.any():
            return {}
        point[g] = float((with_finding & called).sum() / with_finding.sum())
        if res:
            boots[g] = res.share(called, with_finding)
    return {"underdiagnosis": point, "underdiagnosis_gap": _gap(point, boots)}

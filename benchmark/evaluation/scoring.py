"""The unit that is scored, and the groups it is scored in.

Where a data set has studies (CheXpert: frontal and lateral views of one examination), published results score
studies, not images: the views' probabilities are reduced to one per study (max or mean) and the study's label is
its views' label. `score_units` does that for any metric; the prediction files stay per image, so everything can be
recomputed from them.

Subgroups (`SUBGROUPS`): sex, age band and view position, where the label file has the column; the report uses
them for the underdiagnosis measure of Seyyed-Kalantari et al. (Nature Medicine, 2021), the gap in false-negative
rate between groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

AGE_BANDS = ((0, 40, "under 40"), (40, 60, "40-59"), (60, 80, "60-79"), (80, 200, "80 and over"))
MIN_GROUP = 30  # fewer scored units than this: no number is printed for the group, and the report says why


@dataclass
class Scored:
    """The arrays a metric is computed on: one row per scored unit (image or study)."""

    truth: np.ndarray  # (units, labels): 1 / 0 / NaN
    probs: np.ndarray
    patients: np.ndarray
    keys: np.ndarray  # the image path or the study id of each unit
    meta: pd.DataFrame  # sex, age, view of each unit (empty columns where the data set has none)
    unit: str  # "image" or "study"
    reduce: str | None = None  # "max" or "mean" for studies


def score_units(frame: pd.DataFrame, truth, probs, unit: str = "image", reduce: str = "max") -> Scored:
    """The units to score from per-image rows: images as they are, or studies (views reduced by max or mean;
    the study's truth is the max of its views' known labels: NaN only where every view is NaN)."""
    truth = np.asarray(truth, float)
    probs = np.asarray(probs, float)
    meta = pd.DataFrame({c: frame[c].to_numpy() if c in frame else None for c in ("sex", "age", "view")},
                        index=range(len(frame)))
    patients = frame["patient"].astype(str).to_numpy()
    if unit != "study" or "study" not in frame:
        keys = frame["path"].astype(str).to_numpy() if "path" in frame else np.arange(len(frame)).astype(str)
        return Scored(truth, probs, patients, keys, meta, "image")
    study = frame["study"].astype(str).to_numpy()
    keys, first, inverse = np.unique(study, return_index=True, return_inverse=True)
    n, labels = len(keys), truth.shape[1]
    if reduce == "mean":
        sums = np.zeros((n, labels))
        np.add.at(sums, inverse, probs)
        agg_probs = sums / np.bincount(inverse, minlength=n)[:, None]
    else:
        agg_probs = np.full((n, labels), -np.inf)
        np.maximum.at(agg_probs, inverse, probs)
    known = np.where(np.isnan(truth), -np.inf, truth)
    agg_truth = np.full((n, labels), -np.inf)
    np.maximum.at(agg_truth, inverse, known)
    agg_truth[np.isinf(agg_truth)] = np.nan
    return Scored(agg_truth, agg_probs, patients[first], keys, meta.iloc[first].reset_index(drop=True), "study",
                  reduce)


def age_band(age) -> str | None:
    try:
        value = float(age)
    except (TypeError, ValueError):
        return None
    if np.isnan(value):
        return None
    return next((name for lo, hi, name in AGE_BANDS if lo <= value < hi), None)


def subgroups(meta: pd.DataFrame) -> dict[str, pd.Series]:
    """Attribute -> each unit's group (None where unknown), for the attributes the data set has."""
    out = {}
    if "sex" in meta and meta["sex"].notna().any():
        out["sex"] = meta["sex"].where(meta["sex"].isin(["M", "F"]))
    if "age" in meta and meta["age"].notna().any():
        out["age"] = meta["age"].map(age_band)
    if "view" in meta and meta["view"].notna().any():
        out["view"] = meta["view"].where(meta["view"].isin(["AP", "PA"]))
    return {k: v for k, v in out.items() if v.notna().any()}


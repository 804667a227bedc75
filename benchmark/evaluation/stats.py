"""The statistics behind the report's uncertainty and comparisons (numpy and scipy; no TensorFlow).

- `PatientBootstrap`: resamples of patients, the same for every run scored on the same test set (their seed comes
  from the test set's patients), keeping only resamples in which every supported label (at least `min_patients`
  positive and as many negative patients in the full set) keeps both classes (so that a macro average is always
  over the same labels; the count used is recorded).
- `resampled_aurocs`: every resample's AUROC for every label of one run at once, in O(resamples x images).
- `delong`: DeLong's test for two correlated AUROCs, with the fast midrank algorithm of Sun and Xu (2014).
- `bootstrap_p` ((k + 1) / (B + 1), never 0) and `normal_p` (from a standard error, floored at 1 / (B + 1): no p
  below what B resamples can show).
- `holm`: Holm's step-down adjustment; `bh`: Benjamini-Hochberg's; `t_interval`: a mean's t confidence interval.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from scipy import stats as sps

MAX_DRAW_FACTOR = 20  # at most this many times the requested resamples are drawn to find complete ones
CHUNK = 256  # resamples processed at once (memory: CHUNK x images x 4 bytes)


def resample_seed(patients) -> int:
    """A seed from the test set's patients: every run scored on the same patients gets the same resamples."""
    unique = np.unique(np.asarray(patients).astype(str))
    return int.from_bytes(hashlib.sha256("\n".join(unique).encode()).digest()[:8], "little")


class PatientBootstrap:
    """`n_boot` resamples of the patients of a test set, as counts per patient (B x patients), drawn so that every
    label defined on the whole set (both classes present) keeps both classes in every resample.

    `truth` is (images, labels) with 1 / 0 / NaN; `patients` gives each image's patient. A label is `defined`
    (supported) with at least `min_patients` positive and as many negative patients; the others are left out of
    the completeness rule and get no resampled AUROC."""

    def __init__(self, patients, truth, n_boot: int, seed: int | None = None, min_patients: int = 1):
        patients = np.asarray(patients).astype(str)
        self.unique, self.inverse = np.unique(patients, return_inverse=True)
        self.n_patients = len(self.unique)
        truth = np.asarray(truth, float)
        self.requested = int(n_boot)
        self.seed = resample_seed(patients) if seed is None else int(seed)
        pos = np.zeros((self.n_patients, truth.shape[1]), np.float32)
        neg = np.zeros_like(pos)
        for j in range(truth.shape[1]):
            col = truth[:, j]
            np.add.at(pos[:, j], self.inverse[col == 1], 1)
            np.add.at(neg[:, j], self.inverse[col == 0], 1)
        self.positive_patients = (pos > 0).sum(0).astype(int)  # per label: patients with a positive unit
        self.negative_patients = (neg > 0).sum(0).astype(int)
        self.min_patients = max(1, int(min_patients))
        defined = (self.positive_patients >= self.min_patients) & (self.negative_patients >= self.min_patients)
        self.defined = defined
        rng = np.random.default_rng(self.seed)
        kept, drawn = [], 0
        limit = max(1, MAX_DRAW_FACTOR * n_boot)
        while sum(len(k) for k in kept) < n_boot and drawn < limit and self.n_patients:
            batch = min(max(n_boot, 64), limit - drawn)
            counts = rng.multinomial(self.n_patients, np.full(self.n_patients, 1 / self.n_patients),
                                     size=batch).astype(np.float32)
            drawn += batch
            ok = ((counts @ pos[:, defined] > 0) & (counts @ neg[:, defined] > 0)).all(axis=1)
            kept.append(counts[ok])
        self.counts = (np.concatenate(kept)[:n_boot] if kept else np.zeros((0, self.n_patients), np.float32))
        self.counts_t = np.ascontiguousarray(self.counts.T, np.float64)  # patients x resamples
        self.drawn = drawn

    @property
    def n(self) -> int:
        """Resamples kept (normally `requested`; fewer when labels are so rare that complete ones are scarce)."""
        return len(self.counts)

    def record(self) -> dict:
        return {"resamples": self.n, "requested": self.requested, "drawn": self.drawn, "seed": self.seed,
                "unit": "patient", "min_patients": self.min_patients,
                "complete": "every supported label keeps both classes"}


def resampled_auc(y, p, patient, counts, counts_t=None) -> np.ndarray:
    """AUROC of one label in each resample: y (n,) in {0, 1}, p (n,) scores, patient (n,) indices into the
    columns of counts (B x patients). Equals sklearn's roc_auc_score with sample_weight = the image's patient
    count (ties count one half). NaN where a resample lacks a class. `counts_t`: counts.T as float64, if at hand.

    The weight of negatives below each positive is needed only at the positives' places among the sorted
    negatives, so the negatives are summed per patient between those places (a sparse patients x segments
    matrix, built once) and each resample costs one sparse product over the negatives and a pass over the
    positives."""
    from scipy import sparse

    y = np.asarray(y).astype(bool)
    p = np.asarray(p, float)
    patient = np.asarray(patient)
    out = np.full(len(counts), np.nan)
    if y.all() or not y.any() or not len(counts):
        return out
    neg_order = np.argsort(p[~y], kind="mergesort")
    neg_scores = p[~y][neg_order]
    neg_patient = patient[~y][neg_order]
    pos_scores, pos_patient = p[y], patient[y]
    lo = np.searchsorted(neg_scores, pos_scores, side="left")
    hi = np.searchsorted(neg_scores, pos_scores, side="right")
    places = np.unique(np.concatenate([lo, hi, [len(neg_scores)]]))  # where the running sum is read
    segment = np.searchsorted(places, np.arange(len(neg_scores)), side="right")  # negative j counts at places > j
    n_patients = counts.shape[1]
    counts_t = np.ascontiguousarray(counts.T, np.float64) if counts_t is None else counts_t
    per_segment = sparse.csr_matrix((np.ones(len(neg_scores)), (segment, neg_patient)),
                                    shape=(len(places), n_patients))
    running = np.cumsum(per_segment @ counts_t, axis=0)  # (places, B): the weight of negatives below each place
    # each positive reads half the running sum at its two places (ties count one half), weighted by its patient's
    # count: summed per place and patient first, so that a resample costs sparse products, not gathers
    rows = np.concatenate([np.searchsorted(places, lo), np.searchsorted(places, hi)])
    readers = sparse.csr_matrix((np.full(len(rows), 0.5), (rows, np.concatenate([pos_patient, pos_patient]))),
                                shape=(len(places), n_patients))
    numerator = np.einsum("kb,kb->b", running, readers @ counts_t)
    total_pos = np.bincount(pos_patient, minlength=n_patients).astype(np.float64) @ counts_t
    total_neg = running[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:] = numerator / (total_pos * total_neg)
    return out


def resampled_aurocs(truth, probs, boot: PatientBootstrap) -> np.ndarray:
    """(B, labels) AUROC of every resample and label of one run (NaN for labels undefined on the full set)."""
    truth = np.asarray(truth, float)
    probs = np.asarray(probs, float)
    out = np.full((boot.n, truth.shape[1]), np.nan)
    for j in range(truth.shape[1]):
        if not boot.defined[j]:
            continue
        present = ~np.isnan(truth[:, j])
        out[:, j] = resampled_auc(truth[present, j], probs[present, j], boot.inverse[present], boot.counts,
                                  boot.counts_t)
    return out


def percentile_ci(values) -> list | None:
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if len(values) < 10:
        return None
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def bootstrap_p(diffs) -> float | None:
    """Two-sided p-value of a paired bootstrap, (k + 1) / (B + 1) on the smaller side, doubled: k resampled
    differences of B at or beyond zero. Never 0: with none beyond zero it is 2 / (B + 1), the least B can show."""
    diffs = np.asarray(diffs, float)
    diffs = diffs[~np.isnan(diffs)]
    if not len(diffs):
        return None
    k = min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))
    return float(min(1.0, 2 * (k + 1) / (len(diffs) + 1)))


def p_floor(n_boot: int) -> float:
    """The least p-value B resamples can show: 1 / (B + 1)."""
    return 1.0 / (int(n_boot) + 1)


def normal_p(diff: float, se: float, n_boot: int | None = None) -> float:
    """Two-sided p of a difference from its standard error (normal approximation), floored at 1 / (B + 1) when
    the SE comes from B resamples: its tail beyond that is the normal curve's, not the data's. With B = 1000 the
    floor is 0.000999, so the smallest Holm-adjusted p of a family of 10 (0.00999) can fall below 0.01, which a
    percentile p ((k + 1) / (B + 1), at least 0.002 two-sided) could not (0.02)."""
    floor = p_floor(n_boot) if n_boot else 0.0
    if not se or se <= 0 or not math.isfinite(se):
        return 1.0 if diff == 0 else max(floor, 0.0)
    return float(max(floor, min(1.0, 2 * sps.norm.sf(abs(diff) / se))))


# --------------------------------------------------------------------------------------------- DeLong
def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their mean rank."""
    return sps.rankdata(x, method="average")


def delong_components(y, p) -> tuple[float, np.ndarray, np.ndarray]:
    """AUROC and the structural components V10 (one per positive) and V01 (one per negative), by midranks
    (Sun and Xu 2014): O(n log n)."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, float)
    pos, neg = p[y], p[~y]
    m, n = len(pos), len(neg)
    tz = _midranks(np.concatenate([pos, neg]))
    tx, ty = _midranks(pos), _midranks(neg)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    return float(v10.mean()), v10, v01


def delong(y, p_a, p_b) -> dict:
    """DeLong's test of AUROC(a) - AUROC(b) on the same images: the difference, its 95 % CI and the two-sided
    p-value. Images are taken as independent (the paired patient bootstrap of the macro AUROC is not)."""
    return delong_from(delong_components(y, p_a), delong_components(y, p_b))


def delong_from(a: tuple, b: tuple) -> dict:
    """DeLong's test from each run's components (delong_components), computed once per run and label."""
    auc_a, v10a, v01a = a
    auc_b, v10b, v01b = b
    m, n = len(v10a), len(v01a)
    s10 = np.cov(np.vstack([v10a, v10b])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01a, v01b])) if n > 1 else np.zeros((2, 2))
    s = s10 / m + s01 / n
    var = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    diff = auc_a - auc_b
    if var <= 0:
        # no variance to test with (a label with one positive, or identical scores): no p, never a p of 0
        return {"diff": diff, "ci": [diff, diff], "p": 1.0 if diff == 0 else None, "se": 0.0}
    se = math.sqrt(var)
    z = diff / se
    return {"diff": diff, "ci": [diff - 1.959964 * se, diff + 1.959964 * se], "p": float(2 * sps.norm.sf(abs(z))),
            "se": se}


# --------------------------------------------------------------------------------------------- adjustments
def holm(pvalues) -> list:
    """Holm's step-down adjustment of a family of p-values (None stays None)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def bh(pvalues) -> list:
    """Benjamini-Hochberg's step-up adjustment (false discovery rate) of a family of p-values (None stays None)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out = [None] * len(pvalues)
    running = 1.0
    for rank, i in reversed(list(enumerate(sorted(idx, key=lambda i: pvalues[i]), start=1))):
        running = min(running, m * pvalues[i] / rank)
        out[i] = min(1.0, running)
    return out


def t_interval(values, level: float = 0.95) -> list | None:
    """The t confidence interval of a mean (e.g. across seeds); None for fewer than two values."""
    values = np.asarray([v for v in values if v is not None and not np.isnan(v)], float)
    if len(values) < 2:
        return None
    mean, sd = values.mean(), values.std(ddof=1)
    half = sps.t.ppf(0.5 + level / 2, len(values) - 1) * sd / math.sqrt(len(values))
    return [float(mean - half), float(mean + half)]

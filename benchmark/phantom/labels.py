"""The phantom's labels: raw CheXpert labels sampled at the real rates, and what is really drawn in each image."""

from __future__ import annotations

from math import erf, sqrt

import numpy as np

from benchmark.data.label_stats import load_label_stats
from benchmark.data.labels import CHEXPERT_14

LABEL_NOISE_MISSED = 0.04  # positives whose sign is not drawn
LABEL_NOISE_SPURIOUS = 0.02  # negatives with a faint sign drawn anyway
UNCERTAIN_STRENGTH = (0.2, 0.5)
POSITIVE_STRENGTH = (0.5, 1.0)
PANEL_THRESHOLD = 0.35  # a sign at least this strong is what a radiologist panel calls present
IDX = {name: i for i, name in enumerate(CHEXPERT_14)}


def sample_labels(n: int, rng: np.random.Generator, stats: dict | None = None) -> np.ndarray:
    """Raw CheXpert labels (1, 0, -1, NaN) for n images by a Gaussian copula of the real frequencies and
    correlations. 'No Finding' is set only where no finding other than Support Devices is present."""
    stats = stats or load_label_stats()
    labels = stats["labels"]
    corr = np.asarray(stats["present_correlation"])
    corr = corr + np.eye(len(labels)) * 1e-6
    z = rng.multivariate_normal(np.zeros(len(labels)), corr, size=n, method="cholesky")
    u = 0.5 * (1 + np.vectorize(erf)(z / sqrt(2)))
    out = np.full((n, len(labels)), np.nan, dtype=np.float32)
    for j, label in enumerate(labels):
        f = stats["frequencies"][label]
        pos, unc, neg = f["positive"], f["uncertain"], f["negative"]
        col = out[:, j]
        col[u[:, j] < pos] = 1
        col[(u[:, j] >= pos) & (u[:, j] < pos + unc)] = -1
        col[(u[:, j] >= pos + unc) & (u[:, j] < pos + unc + neg)] = 0
    nf = labels.index("No Finding")
    others = [j for j, x in enumerate(labels) if x not in ("No Finding", "Support Devices")]
    any_finding = ((out[:, others] == 1) | (out[:, others] == -1)).any(axis=1)
    out[:, nf] = np.where(any_finding, np.nan, 1.0)
    # Images without findings are reported as normal about half the time in CheXpert; the rest stay blank.
    out[~any_finding & (rng.random(n) < 0.45), nf] = np.nan
    return out


def truth_from_labels(raw: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """What is really in each image: sign strengths in [0, 1] per label, and labels as a radiologist panel
    would give them (the validation set's labels: no uncertainty, no report-mining errors)."""
    n, L = raw.shape
    strength = np.zeros((n, L), dtype=np.float32)
    pos = raw == 1
    unc = raw == -1
    strength[pos] = rng.uniform(*POSITIVE_STRENGTH, size=int(pos.sum()))
    strength[unc] = rng.uniform(*UNCERTAIN_STRENGTH, size=int(unc.sum()))
    missed = pos & (rng.random((n, L)) < LABEL_NOISE_MISSED)
    strength[missed] = 0.0
    spurious = ~pos & ~unc & (rng.random((n, L)) < LABEL_NOISE_SPURIOUS)
    strength[spurious] = rng.uniform(0.3, 0.6, size=int(spurious.sum()))
    strength[:, IDX["No Finding"]] = 0.0
    panel = (strength >= PANEL_THRESHOLD).astype(np.float32)
    others = [j for j, x in enumerate(CHEXPERT_14) if x not in ("No Finding", "Support Devices")]
    panel[:, IDX["No Finding"]] = (panel[:, others].sum(axis=1) == 0).astype(np.float32)
    return strength, panel

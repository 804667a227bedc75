"""Patient-wise splits, deterministic by seed, and the leakage check that refuses a patient in two parts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.errors import UserError


def patient_split(patients: pd.Series, fractions: dict[str, float], seed: int, rest: str = "train") -> np.ndarray:
    """Assign each row a split name so that all rows of a patient share it.

    `fractions` maps split names to the fraction of patients they get; the remaining patients go to `rest`.
    The same patients, fractions and seed give the same split on every machine.
    """
    unique = np.array(sorted(pd.unique(patients.astype(str))))
    order = np.random.default_rng(seed).permutation(len(unique))
    assigned = np.full(len(unique), rest, dtype=object)
    start = 0
    for name, frac in fractions.items():
        count = int(round(frac * len(unique)))
        if frac > 0 and count == 0 and len(unique) > len(fractions):
            count = 1
        assigned[order[start:start + count]] = name
        start += count
    lookup = dict(zip(unique, assigned))
    return patients.astype(str).map(lookup).to_numpy(dtype=object)


def check_leakage(frame: pd.DataFrame, source: str = "the split") -> None:
    """Raise a UserError if any patient has rows in more than one split."""
    per_patient = frame.groupby(frame["patient"].astype(str))["split"].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        example = leaked.index[0]
        parts = sorted(frame.loc[frame["patient"].astype(str) == example, "split"].unique())
        raise UserError(
            f"{source} puts {len(leaked)} patient(s) in more than one part (e.g. patient {example} is in "
            f"{' and '.join(parts)}); splits must be patient-wise, so fix the split file or drop it to let "
            f"cxr-bench split by patient"
        )


def subsample_patients(frame: pd.DataFrame, max_images: int, seed: int) -> pd.DataFrame:
    """Keep whole patients, in a seeded order, until about `max_images` rows are kept."""
    if max_images is None or len(frame) <= max_images:
        return frame
    patients = np.array(sorted(frame["patient"].astype(str).unique()))
    patients = patients[np.random.default_rng(seed).permutation(len(patients))]
    counts = frame.groupby(frame["patient"].astype(str)).size().reindex(patients).to_numpy()
    keep = set(patients[: int(np.searchsorted(np.cumsum(counts), max_images, side="right")) or 1])
    return frame[frame["patient"].astype(str).isin(keep)]

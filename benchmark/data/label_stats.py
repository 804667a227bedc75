"""Aggregate label statistics of CheXpert's train.csv, which the phantom samples its labels from.

Only aggregates are stored (per-label value frequencies and a correlation matrix), never rows of the data set.
`compute_label_stats` rebuilds `resources/chexpert_label_stats.json` from a copy of train.csv.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.labels import CHEXPERT_14

STATS_FILE = Path(__file__).with_name("resources") / "chexpert_label_stats.json"


def compute_label_stats(train_csv) -> dict:
    """Frequencies of 1 / 0 / -1 / blank per label over frontal images, and the correlation of 'present'
    (positive or uncertain) between labels, plus the share of lateral views and of AP projections."""
    frame = pd.read_csv(train_csv)
    frontal = frame[frame["Frontal/Lateral"] == "Frontal"]
    raw = frontal[list(CHEXPERT_14)].to_numpy(dtype=float)
    freq = {}
    for j, label in enumerate(CHEXPERT_14):
        col = raw[:, j]
        freq[label] = {"positive": float((col == 1).mean()), "negative": float((col == 0).mean()),
                       "uncertain": float((col == -1).mean()), "blank": float(np.isnan(col).mean())}
    present = ((raw == 1) | (raw == -1)).astype(float)
    corr = np.corrcoef(present, rowvar=False)
    patients = frame["Path"].str.extract(r"(patient\d+)")[0]
    return {
        "source": "CheXpert-v1.0-small train.csv (Irvin et al. 2019), frontal images; aggregates only",
        "images": int(len(frontal)),
        "labels": list(CHEXPERT_14),
        "frequencies": freq,
        "present_correlation": np.round(corr, 4).tolist(),
        "lateral_share": float((frame["Frontal/Lateral"] == "Lateral").mean()),
        "ap_share": float((frontal["AP/PA"] == "AP").mean()),
        "images_per_patient": float(len(frame) / patients.nunique()),
        "age_mean": float(frame["Age"].mean()),
        "age_sd": float(frame["Age"].std()),
        "female_share": float((frame["Sex"] == "Female").mean()),
    }


def load_label_stats() -> dict:
    return json.loads(STATS_FILE.read_text())


if __name__ == "__main__":
    import sys

    STATS_FILE.write_text(json.dumps(compute_label_stats(sys.argv[1]), indent=1) + "\n")
    print(f"wrote {STATS_FILE}")

"""Any CSV-described data set (MIMIC-CXR-JPG, PadChest exports, in-house): a path column, label columns holding
1 / 0 / -1 / blank, and optional patient and split columns."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.formats import LoadOptions
from benchmark.data.table import check_inside, demographics, numeric_labels, read_table
from benchmark.errors import UserError

NOT_LABELS = {"Sex", "sex", "Age", "age", "Patient Gender", "Patient Age", "Frontal/Lateral", "AP/PA", "View Position"}


def looks_like_labels(col: pd.Series) -> bool:
    values = pd.to_numeric(col, errors="coerce")
    if values.notna().sum() == 0 or (col.notna() & values.isna()).any():
        return False
    return bool(values.dropna().isin([1.0, 0.0, -1.0]).all())


def load_generic_csv(csv: Path, root: Path, options: LoadOptions) -> tuple[pd.DataFrame, tuple]:
    """Label columns are `options.labels` when it is a list, else every column that holds only 1, 0, -1 or
    blank; a split column holds train / val (valid, validation) / test."""
    path_column, patient_column, split_column = options.path_column, options.patient_column, options.split_column
    required = tuple(c for c in (path_column, patient_column, split_column) if c)
    frame = read_table(csv, required=required)
    meta = set(required) | NOT_LABELS
    if isinstance(options.labels, (list, tuple)):
        missing = [x for x in options.labels if x not in frame.columns]
        if missing:
            raise UserError(f"{csv}: missing label column(s) {', '.join(map(repr, missing))}")
        label_cols = tuple(options.labels)
    else:
        label_cols = tuple(c for c in frame.columns if c not in meta and looks_like_labels(frame[c]))
        if not label_cols:
            raise UserError(f"{csv}: found no label columns (columns holding only 1, 0, -1 or blank); "
                            f"name them with --set labels=[...]")
    paths = frame[path_column].astype(str)
    check_inside(paths, csv)
    out = pd.DataFrame({
        "path": paths,
        "file": str(root) + os.sep + paths,
        "patient": frame[patient_column].astype(str) if patient_column else paths,
        "study": paths,
        "view": frame["Frontal/Lateral"].astype(str).str.lower() if "Frontal/Lateral" in frame else "frontal",
        "projection": (frame["AP/PA"].fillna("").astype(str) if "AP/PA" in frame else
                       frame["View Position"].fillna("").astype(str) if "View Position" in frame else ""),
        **demographics(frame),
        "split": "train",
    })
    if split_column:
        split = frame[split_column].astype(str).str.strip().str.lower().replace({"valid": "val", "validation": "val"})
        bad = ~split.isin(["train", "val", "test"])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(f"{csv}: column {split_column!r}, line {i + 2}: value {frame[split_column].iloc[i]!r} "
                            f"is not train, val or test")
        out["split"] = split.to_numpy()
    out = pd.concat([out, numeric_labels(frame, label_cols, csv)], axis=1)
    if split_column:
        out.attrs["user_split"] = f"column {split_column!r} of {csv}"
    return out, label_cols

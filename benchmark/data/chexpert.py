"""CheXpert v1.0 and v1.0-small (Irvin et al. 2019), and the phantom, which is written in the same layout:
``train.csv`` and ``valid.csv`` whose paths begin with the download's folder name
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.formats import LoadOptions
from benchmark.data.labels import CHEXPERT_14
from benchmark.data.table import check_inside, demographics, numeric_labels, read_table
from benchmark.errors import UserError


def _strip_prefix(first_path: str, root: Path) -> bool:
    """CheXpert paths begin with the data set's folder name; --data-root may be that folder or its parent.
    True when the first component must be removed to find the files under `root`."""
    top = first_path.split("/", 1)[0]
    if (root / first_path).exists():
        return False
    stripped = first_path.split("/", 1)[1] if "/" in first_path else first_path
    return bool((root / stripped).exists() or root.name == top)


def chexpert_frame(csv: Path, root: Path, source_split: str) -> pd.DataFrame:
    """One CheXpert label file as the common table, its rows in split `source_split`."""
    frame = read_table(csv, required=("Path",))
    missing_labels = [c for c in CHEXPERT_14 if c not in frame.columns]
    if missing_labels:
        raise UserError(f"{csv}: missing label column(s) {', '.join(map(repr, missing_labels))}; is this a CheXpert "
                        f"train.csv / valid.csv? For other CSVs use --dataset csv")
    paths = frame["Path"].astype(str)
    strip = _strip_prefix(paths.iloc[0], root) if len(paths) else False
    rel = paths.str.split("/", n=1).str[1].fillna("") if strip else paths
    check_inside(rel, csv, written=paths)
    ids = paths.str.extract(r"(patient\d+)/(study\d+)")
    view_col = frame["Frontal/Lateral"].astype(str) if "Frontal/Lateral" in frame else pd.Series(
        np.where(paths.str.contains("frontal"), "Frontal", "Lateral"), index=frame.index)
    out = pd.DataFrame({
        "path": paths,
        "file": str(root) + os.sep + rel,
        "patient": ids[0].fillna(paths),
        "study": ids[0].fillna(paths) + "/" + ids[1].fillna(""),
        "view": view_col.str.lower().map({"frontal": "frontal", "lateral": "lateral"}).fillna("frontal"),
        "projection": frame["AP/PA"].fillna("").astype(str) if "AP/PA" in frame else "",
        **demographics(frame),
        "split": source_split,
    })
    return pd.concat([out, numeric_labels(frame, CHEXPERT_14, csv)], axis=1)


def load_chexpert(csv: Path, root: Path, options: LoadOptions) -> tuple[pd.DataFrame, tuple]:
    """train.csv rows are train; valid.csv rows (the file beside train.csv, or `options.valid_csv`) the official
    validation set (val); the official test labels (`options.test_csv`) the official test set (test). The
    protocol (benchmark.data.protocols) decides which of them is tested on."""
    parts = [chexpert_frame(csv, root, "train")]
    valid = options.valid_csv or (csv.parent / "valid.csv" if csv.name.startswith("train") else None)
    sources, attrs = [], {}
    if options.include_valid and valid is not None and Path(valid).is_file():
        parts.append(chexpert_frame(Path(valid), root, "val"))
        sources.append(str(valid))
        attrs["val_source"] = Path(valid).name
    if options.include_valid and options.test_csv is not None:
        parts.append(chexpert_frame(Path(options.test_csv), root, "test"))
        sources.append(str(options.test_csv))
        attrs["test_source"] = Path(options.test_csv).name
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs.update(attrs, sources=sources)
    return frame, CHEXPERT_14

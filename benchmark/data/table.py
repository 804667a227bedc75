"""The one table every data set format is loaded into, and the checks every loader shares (pandas only).

A loader returns one row per image with the columns ``path`` (as written in the label file), ``file`` (absolute
path), ``patient``, ``study``, ``view`` (frontal/lateral), ``projection`` (AP, PA, LL ... or empty) and ``split``
(train / val / test), then one column per label holding the raw value: 1, 0, -1 (uncertain) or NaN (blank).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError

PHANTOM_MARKER = "SYNTHETIC_PHANTOM.txt"
META_COLUMNS = ("path", "file", "patient", "study", "view", "projection", "split")


@dataclass
class Dataset:
    """A loaded data set: one row per image, with its label columns in source order."""

    kind: str
    frame: pd.DataFrame
    labels: tuple
    source: str
    root: Path | None
    synthetic: bool = False

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name]


def read_table(path: str | os.PathLike, required: tuple = ()) -> pd.DataFrame:
    """Read a CSV (or .csv.gz) label file; missing file or columns are a UserError naming them."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"label file {path} does not exist; pass --csv or --data-root pointing at the download")
    try:
        frame = pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot be read as CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(map(repr, missing))}; "
                        f"found: {', '.join(map(str, frame.columns[:20]))}")
    return frame


def numeric_labels(frame: pd.DataFrame, labels, source) -> pd.DataFrame:
    """Parse label columns as 1 / 0 / -1 / blank; anything else is a UserError naming file, column, row and value."""
    out = {}
    for label in labels:
        col = frame[label]
        if pd.api.types.is_numeric_dtype(col):
            values = col
            bad = values.notna() & ~values.isin([1.0, 0.0, -1.0])
        else:
            values = pd.to_numeric(col, errors="coerce")
            bad = (values.isna() & col.notna() & (col.astype(str).str.strip() != "")) | (
                values.notna() & ~values.isin([1.0, 0.0, -1.0]))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            value = col.iloc[i]
            shown = repr(value) if isinstance(value, str) else repr(float(value))
            raise UserError(f"{source}: column {label!r}, line {i + 2}: value {shown} is not a label; "
                            f"labels must be 1, 0, -1 (uncertain) or blank")
        out[label] = values.astype(np.float32)
    return pd.DataFrame(out, index=frame.index)


def check_inside(paths: pd.Series, source) -> None:
    """Refuse paths that are absolute or climb out of the data root."""
    suspicious = paths.str.startswith("/") | paths.str.contains("..", regex=False)
    for i in np.flatnonzero(suspicious.to_numpy()):
        p = paths.iloc[i]
        if os.path.isabs(p) or os.path.normpath(p).startswith(".."):
            raise UserError(f"{source}: line {i + 2}: path {p!r} escapes the data root; "
                            f"paths must be relative to the data set's folder")

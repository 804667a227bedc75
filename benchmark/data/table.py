"""The one table every data set format is loaded into, and the checks every loader shares (pandas only).

A loader returns one row per image with the columns ``path`` (as written in the label file), ``file`` (absolute
path), ``patient``, ``study``, ``view`` (frontal/lateral), ``projection`` (AP, PA, LL ... or empty), ``sex`` (M, F
or empty), ``age`` (years, or NaN) and ``split`` (train; val and test where the download defines them), then one
column per label holding the raw value: 1, 0, -1 (uncertain) or NaN (blank).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError

PHANTOM_MARKER = "SYNTHETIC_PHANTOM.txt"
META_COLUMNS = ("path", "file", "patient", "study", "view", "projection", "sex", "age", "split")


@dataclass
class Dataset:
    """A loaded data set: one row per image, with its label columns in source order."""

    kind: str
    frame: pd.DataFrame
    labels: tuple
    source: str
    root: Path | None
    synthetic: bool = False
    sources: tuple = ()  # every label file (and split list) read, for the run's fingerprint
    protocol: dict | None = None  # how the test and validation sets were chosen (benchmark.data.protocols)

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name]


def read_table(path: str | os.PathLike, required: tuple = ()) -> pd.DataFrame:
    """Read a CSV (or .csv.gz) label file; missing file or columns are a UserError naming them."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"label file {path} does not exist; pass --csv or --data-root pointing at the download")
    try:
        frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty (no header, no rows); point at the data set's label file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot be read as CSV ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise UserError(f"{path} has a header but no rows; point at the data set's label file")
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


def check_inside(opened: pd.Series, source, written: pd.Series | None = None) -> None:
    """Refuse image paths that are absolute or climb out of the data root, checked in the form in which they are
    opened under it (after a data set's prefix is removed, ".." collapsed); `written` is how the label file
    wrote them, for the message. Symbolic links inside the data root are the user's own and are followed."""
    written = opened if written is None else written
    nul = opened.str.contains("\0", regex=False).fillna(False)
    if nul.any():  # no file name can hold one; Python's os calls would raise ValueError deep in the cache
        i = int(np.flatnonzero(nul.to_numpy())[0])
        raise UserError(f"{source}: line {i + 2}: path {written.iloc[i]!r} holds a NUL byte, which no file name "
                        f"can; correct that row of the label file")
    suspicious = opened.str.startswith(("/", "\\")) | opened.str.contains("..", regex=False) | opened.str.contains(
        ":", regex=False)
    for i in np.flatnonzero(suspicious.to_numpy()):
        p = opened.iloc[i]
        norm = os.path.normpath(p)
        if os.path.isabs(p) or norm == ".." or norm.startswith(".." + os.sep) or (len(p) > 1 and p[1] == ":"):
            raise UserError(f"{source}: line {i + 2}: path {written.iloc[i]!r} escapes the data root; "
                            f"paths must be relative to the data set's folder")


def demographics(frame: pd.DataFrame, sex_columns=("Sex", "sex", "Patient Gender", "PatientSex"),
                 age_columns=("Age", "age", "Patient Age", "PatientAge")) -> dict:
    """`sex` (M / F) and `age` (years) from whichever of these columns a label file has (empty where none)."""
    sex = next((c for c in sex_columns if c in frame), None)
    age = next((c for c in age_columns if c in frame), None)
    return {"sex": normalise_sex(frame[sex]) if sex else pd.Series(None, index=frame.index, dtype=object),
            "age": normalise_age(frame[age]) if age else pd.Series(np.nan, index=frame.index)}


def drop_duplicates(frame: pd.DataFrame, labels, source) -> pd.DataFrame:
    """One row per image: repeated rows with the same labels are dropped with a warning; repeats whose labels
    disagree are a UserError naming the image."""
    dup = frame["file"].duplicated(keep=False)
    if not dup.any():
        return frame
    repeats = frame[dup]
    values = repeats[list(labels)].fillna(-9)
    conflicting = values.groupby(repeats["file"]).nunique().max(axis=1) > 1
    if conflicting.any():
        file = conflicting[conflicting].index[0]
        rows = np.flatnonzero((frame["file"] == file).to_numpy())
        raise UserError(f"{source}: image {frame['path'].iloc[rows[0]]!r} is listed {len(rows)} times with different "
                        f"labels (rows {', '.join(str(r + 1) for r in rows[:4])}); keep one row per image")
    import sys

    n = int(frame["file"].duplicated().sum())
    print(f"warning: {source}: {n} image(s) listed more than once with the same labels (e.g. "
          f"{repeats['path'].iloc[0]!r}); the repeats are ignored", file=sys.stderr)
    return frame[~frame["file"].duplicated()]


def normalise_sex(values: pd.Series) -> pd.Series:
    """M / F from the spellings of the label files (Male, Female, M, F); anything else unknown."""
    mapped = values.astype(str).str.strip().str.upper().str[:1]
    return mapped.where(mapped.isin(["M", "F"]))


def normalise_age(values: pd.Series) -> pd.Series:
    """Ages as numbers; NIH's first release writes them as "058Y"."""
    return pd.to_numeric(values.astype(str).str.extract(r"(\d+(?:\.\d+)?)")[0], errors="coerce")

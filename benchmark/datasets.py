"""Loaders for the published label files: CheXpert (train.csv / valid.csv), NIH ChestX-ray14
(Data_Entry_2017*.csv) and a generic CSV. They need pandas only: no images, no TensorFlow.

Every loader returns a `Dataset` whose frame has one row per image with the columns
``path`` (as written in the file), ``file`` (absolute path), ``patient``, ``study``, ``view`` (frontal/lateral),
``projection`` (AP, PA, LL ... or empty) and ``split`` (train / val / test), then one column per label holding the
raw value: 1, 0, -1 (uncertain) or NaN (blank).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.labels import CHEXPERT_14, NIH_14
from benchmark.splits import check_leakage, patient_split, subsample_patients

PHANTOM_MARKER = "SYNTHETIC_PHANTOM.txt"
NIH_LABEL_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv.gz",
                   "Data_Entry_2017.csv.gz")
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


def _numeric_labels(frame: pd.DataFrame, labels, source) -> pd.DataFrame:
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


def _check_inside(paths: pd.Series, source) -> None:
    """Refuse paths that are absolute or climb out of the data root."""
    suspicious = paths.str.startswith("/") | paths.str.contains("..", regex=False)
    for i in np.flatnonzero(suspicious.to_numpy()):
        p = paths.iloc[i]
        if os.path.isabs(p) or os.path.normpath(p).startswith(".."):
            raise UserError(f"{source}: line {i + 2}: path {p!r} escapes the data root; "
                            f"paths must be relative to the data set's folder")


def _resolve_chexpert_root(first_path: str, root: Path) -> tuple[Path, bool]:
    """CheXpert paths begin with the data set's folder name; accept --data-root as that folder or its parent."""
    top = first_path.split("/", 1)[0]
    if (root / first_path).exists():
        return root, False
    stripped = first_path.split("/", 1)[1] if "/" in first_path else first_path
    if (root / stripped).exists() or root.name == top:
        return root, True
    return root, False


def _chexpert_frame(csv: Path, root: Path, source_split: str) -> pd.DataFrame:
    frame = read_table(csv, required=("Path",))
    missing_labels = [c for c in CHEXPERT_14 if c not in frame.columns]
    if missing_labels:
        raise UserError(f"{csv}: missing label column(s) {', '.join(map(repr, missing_labels))}; is this a CheXpert "
                        f"train.csv / valid.csv? For other CSVs use --dataset csv")
    paths = frame["Path"].astype(str)
    _check_inside(paths, csv)
    base, strip = _resolve_chexpert_root(paths.iloc[0], root) if len(paths) else (root, False)
    rel = paths.str.split("/", n=1).str[1] if strip else paths
    ids = paths.str.extract(r"(patient\d+)/(study\d+)")
    view_col = frame["Frontal/Lateral"].astype(str) if "Frontal/Lateral" in frame else pd.Series(
        np.where(paths.str.contains("frontal"), "Frontal", "Lateral"), index=frame.index)
    out = pd.DataFrame({
        "path": paths,
        "file": str(base) + os.sep + rel,
        "patient": ids[0].fillna(paths),
        "study": ids[0].fillna(paths) + "/" + ids[1].fillna(""),
        "view": view_col.str.lower().map({"frontal": "frontal", "lateral": "lateral"}).fillna("frontal"),
        "projection": frame["AP/PA"].fillna("").astype(str) if "AP/PA" in frame else "",
        "split": source_split,
    })
    out = pd.concat([out, _numeric_labels(frame, CHEXPERT_14, csv)], axis=1)
    return out


def load_chexpert(train_csv: Path, valid_csv: Path | None, root: Path) -> pd.DataFrame:
    """CheXpert-v1.0 / -small: train.csv rows become train (test is carved later), valid.csv rows become val."""
    parts = [_chexpert_frame(train_csv, root, "train")]
    if valid_csv is not None and valid_csv.is_file():
        parts.append(_chexpert_frame(valid_csv, root, "val"))
    return pd.concat(parts, ignore_index=True)


def _nih_image_index(root: Path) -> dict[str, str]:
    """Map image file names to paths across images/ and the images_001/images ... folders of the archives."""
    index = {}
    folders = [root / "images", root] + sorted(root.glob("images_*/images")) + sorted(root.glob("images_*"))
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name.endswith(".png") and e.name not in index:
                    index[e.name] = e.path
    return index


def load_nih(csv: Path, root: Path, need_files: bool = True) -> pd.DataFrame:
    """NIH ChestX-ray14: split 'Finding Labels' into the 14 labels (1/0); official split lists if present."""
    frame = read_table(csv, required=("Image Index", "Finding Labels", "Patient ID"))
    findings = frame["Finding Labels"].fillna("").astype(str)
    exploded = findings.str.split("|").explode().str.strip()
    known = set(NIH_14) | {"No Finding", ""}
    unknown = exploded[~exploded.isin(known)]
    if len(unknown):
        i = int(unknown.index[0])
        raise UserError(f"{csv}: column 'Finding Labels', line {i + 2}: unknown finding {unknown.iloc[0]!r}; "
                        f"expected names from: {', '.join(NIH_14)} or 'No Finding'")
    onehot = pd.crosstab(exploded.index, exploded).reindex(index=frame.index, columns=list(NIH_14), fill_value=0)
    names = frame["Image Index"].astype(str)
    _check_inside(names, csv)
    index = _nih_image_index(root) if need_files else {}
    default_dir = str(root / "images") + os.sep
    files = names.map(index).fillna(default_dir + names) if index else default_dir + names
    out = pd.DataFrame({
        "path": names,
        "file": files,
        "patient": frame["Patient ID"].astype(str),
        "study": names.str.replace(".png", "", regex=False),
        "view": "frontal",
        "projection": frame["View Position"].fillna("").astype(str) if "View Position" in frame else "",
        "split": "train",
    })
    out = pd.concat([out, onehot.astype(np.float32)], axis=1)
    for folder in (root, csv.parent):
        test_list = folder / "test_list.txt"
        if test_list.is_file():
            test_names = set(test_list.read_text().split())
            out.loc[out["path"].isin(test_names), "split"] = "test"
            out.attrs["official_test"] = str(test_list)
            train_list = folder / "train_val_list.txt"
            if train_list.is_file():
                listed = test_names | set(train_list.read_text().split())
                out = out[out["path"].isin(listed)]
            break
    return out


def load_generic_csv(csv: Path, root: Path, path_column: str, patient_column: str | None,
                     split_column: str | None, labels) -> tuple[pd.DataFrame, tuple]:
    """A CSV with a path column, label columns (1/0/-1/blank) and optional patient and split columns."""
    required = tuple(c for c in (path_column, patient_column, split_column) if c)
    frame = read_table(csv, required=required)
    meta = set(required) | {"Sex", "Age", "Frontal/Lateral", "AP/PA", "View Position"}
    if isinstance(labels, (list, tuple)):
        missing = [x for x in labels if x not in frame.columns]
        if missing:
            raise UserError(f"{csv}: missing label column(s) {', '.join(map(repr, missing))}")
        label_cols = tuple(labels)
    else:
        label_cols = tuple(c for c in frame.columns if c not in meta and _looks_like_labels(frame[c]))
        if not label_cols:
            raise UserError(f"{csv}: found no label columns (columns holding only 1, 0, -1 or blank); "
                            f"name them with --set labels=[...]")
    paths = frame[path_column].astype(str)
    _check_inside(paths, csv)
    out = pd.DataFrame({
        "path": paths,
        "file": str(root) + os.sep + paths,
        "patient": frame[patient_column].astype(str) if patient_column else paths,
        "study": paths,
        "view": frame["Frontal/Lateral"].astype(str).str.lower() if "Frontal/Lateral" in frame else "frontal",
        "projection": frame["AP/PA"].fillna("").astype(str) if "AP/PA" in frame else "",
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
        out.attrs["user_split"] = f"column {split_column!r} of {csv}"
    out = pd.concat([out, _numeric_labels(frame, label_cols, csv)], axis=1)
    return out, label_cols


def _looks_like_labels(col: pd.Series) -> bool:
    values = pd.to_numeric(col, errors="coerce")
    if values.notna().sum() == 0 or (col.notna() & values.isna()).any():
        return False
    return bool(values.dropna().isin([1.0, 0.0, -1.0]).all())


def default_csv(dataset: str, root: Path) -> Path:
    """The label file a download keeps under its root."""
    if dataset in ("chexpert", "phantom"):
        for folder in (root, root / "CheXpert-v1.0-small", root / "CheXpert-v1.0"):
            if (folder / "train.csv").is_file():
                return folder / "train.csv"
        raise UserError(f"no train.csv in {root} or its CheXpert-v1.0(-small) folder; point --data-root at the "
                        f"unpacked CheXpert download")
    if dataset == "nih":
        for name in NIH_LABEL_FILES:
            if (root / name).is_file():
                return root / name
        return root / NIH_LABEL_FILES[1]
    raise UserError("--dataset csv needs --csv (or train_csv in the config) naming the label file")


def load_table(dataset: str, csv: str | os.PathLike, data_root: str | os.PathLike | None = None,
               valid_csv: str | os.PathLike | None = None, views: str = "frontal", projections=None,
               need_files: bool = True, path_column: str = "Path", patient_column: str | None = None,
               split_column: str | None = None, labels="all", include_valid: bool = True) -> Dataset:
    """Read a label file (and, with `include_valid`, CheXpert's valid.csv beside it) into a Dataset with the view
    filter applied and no split yet."""
    csv = Path(csv)
    if data_root is not None:
        root = Path(data_root)
        if not root.is_dir():
            raise UserError(f"data root {root} does not exist or is not a folder")
    else:
        root = csv.parent
    root = root.resolve()
    synthetic = (root / PHANTOM_MARKER).is_file() or (csv.parent / PHANTOM_MARKER).is_file()
    if dataset in ("chexpert", "phantom"):
        valid = Path(valid_csv) if valid_csv else (csv.parent / "valid.csv" if csv.name.startswith("train") else None)
        valid = valid if include_valid else None
        frame = load_chexpert(csv, valid, root)
        all_labels = CHEXPERT_14
    elif dataset == "nih":
        frame = load_nih(csv, root, need_files=need_files)
        all_labels = NIH_14
    elif dataset == "csv":
        frame, all_labels = load_generic_csv(csv, root, path_column, patient_column, split_column, labels)
    else:
        raise UserError(f"unknown dataset {dataset!r}; use chexpert, nih, csv or phantom")
    if views == "frontal":
        frame = frame[frame["view"] == "frontal"]
    if projections:
        frame = frame[frame["projection"].isin([str(p) for p in projections])]
    if frame.empty:
        raise UserError(f"{csv}: no images left after filtering (views={views}, projections={projections}); "
                        f"use --all-views or another projection filter")
    return Dataset(kind=dataset, frame=frame.reset_index(drop=True), labels=tuple(all_labels), source=str(csv),
                   root=root, synthetic=synthetic)


def assign_splits(ds: Dataset, val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    """Fill in the parts the download does not define, by patient; then refuse any patient in two parts."""
    frame = ds.frame.copy()
    has_val = (frame["split"] == "val").any()
    has_test = (frame["split"] == "test").any()
    pool = frame["split"] == "train"
    fractions = {}
    if not has_val:
        fractions["val"] = val_fraction
    if not has_test:
        fractions["test"] = test_fraction
    if fractions:
        frame.loc[pool, "split"] = patient_split(frame.loc[pool, "patient"], fractions, seed)
    source = frame.attrs.get("user_split") or frame.attrs.get("official_test") or "the split"
    check_leakage(frame, source)
    return Dataset(ds.kind, frame, ds.labels, ds.source, ds.root, ds.synthetic)


def load_dataset(cfg, need_files: bool = True) -> tuple[Dataset, tuple]:
    """Load, filter and split the data set a Config names; returns the Dataset and the labels trained."""
    from benchmark.labels import resolve_label_set

    if cfg.data_root is None and cfg.train_csv is None:
        raise UserError(f"dataset {cfg.dataset} needs --data-root (the folder of the download) or train_csv")
    root = Path(cfg.data_root) if cfg.data_root else None
    csv = Path(cfg.train_csv) if cfg.train_csv else default_csv(cfg.dataset, root)
    ds = load_table(cfg.dataset, csv, root, cfg.valid_csv, cfg.views, cfg.projections, need_files,
                    cfg.path_column, cfg.patient_column, cfg.split_column, cfg.labels)
    ds = assign_splits(ds, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    if cfg.max_train_images:
        train = subsample_patients(ds.split("train"), cfg.max_train_images, cfg.split_seed)
        ds.frame = pd.concat([train, ds.frame[ds.frame["split"] != "train"]]).reset_index(drop=True)
    labels = resolve_label_set(cfg.labels, ds.labels)
    for part in ("train", "val", "test"):
        if ds.split(part).empty:
            raise UserError(f"{ds.source}: the {part} split is empty ({len(ds.frame)} images in all); "
                            f"use more data or change val_fraction / test_fraction")
    return ds, labels


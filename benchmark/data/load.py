"""From a label file (or a Config) to a split `Dataset`, through the format table (pandas only: no images, no
TensorFlow)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from benchmark.data.formats import LoadOptions, default_csv, get_format
from benchmark.data.protocols import apply_protocol
from benchmark.data.splits import subsample_patients
from benchmark.data.table import PHANTOM_MARKER, Dataset, drop_duplicates
from benchmark.errors import UserError


def load_table(dataset: str, csv: str | os.PathLike, data_root: str | os.PathLike | None = None,
               valid_csv: str | os.PathLike | None = None, views: str = "frontal", projections=None,
               need_files: bool = True, path_column: str = "Path", patient_column: str | None = None,
               split_column: str | None = None, labels="all", include_valid: bool = True,
               test_csv: str | os.PathLike | None = None) -> Dataset:
    """Read a label file (and, with `include_valid`, CheXpert's valid.csv and official test labels beside it, or
    `valid_csv` / `test_csv`) into a Dataset with the view filter applied and no protocol yet."""
    fmt = get_format(dataset)
    csv = Path(csv)
    if data_root is not None:
        root = Path(data_root)
        if not root.is_dir():
            raise UserError(f"data root {root} does not exist or is not a folder")
    else:
        root = csv.parent
    root = root.resolve()
    synthetic = fmt.synthetic or (root / PHANTOM_MARKER).is_file() or (csv.parent / PHANTOM_MARKER).is_file()
    if test_csv is None and include_valid:
        test_csv = next((csv.parent / name for name in fmt.test_files if (csv.parent / name).is_file()), None)
    options = LoadOptions(valid_csv=Path(valid_csv) if valid_csv else None, include_valid=include_valid,
                          test_csv=Path(test_csv) if test_csv else None,
                          need_files=need_files, path_column=path_column, patient_column=patient_column,
                          split_column=split_column, labels=labels)
    frame, all_labels = fmt.load()(csv, root, options)
    if frame.empty:
        raise UserError(f"{csv}: no images listed")
    sources = tuple(dict.fromkeys([str(csv), *frame.attrs.get("sources", ())]))
    attrs = dict(frame.attrs)
    frame = drop_duplicates(frame, all_labels, csv)
    frame.attrs.update(attrs)
    if views == "frontal":
        frame = frame[frame["view"] == "frontal"]
    if projections:
        frame = frame[frame["projection"].isin([str(p) for p in projections])]
    if frame.empty:
        raise UserError(f"{csv}: no images left after filtering (views={views}, projections={projections}); "
                        f"use --all-views or another projection filter")
    attrs = dict(frame.attrs)
    frame = frame.reset_index(drop=True)
    frame.attrs.update(attrs)
    return Dataset(kind=dataset, frame=frame, labels=tuple(all_labels), source=str(csv),
                   root=root, synthetic=synthetic, sources=sources)


def assign_splits(ds: Dataset, val_fraction: float, test_fraction: float, seed: int,
                  protocol: str = "auto") -> Dataset:
    """Decide every image's split by the protocol (benchmark.data.protocols), carving what the download does not
    define by patient; then refuse any patient in two parts."""
    frame, record = apply_protocol(ds.frame, protocol, val_fraction, test_fraction, seed, ds.source)
    return Dataset(ds.kind, frame, ds.labels, ds.source, ds.root, ds.synthetic, ds.sources, record)


def load_dataset(cfg, need_files: bool = True) -> tuple[Dataset, tuple]:
    """Load, filter and split the data set a Config names; returns the Dataset and the labels trained."""
    from benchmark.data.labels import resolve_label_set

    if cfg.data_root is None and cfg.train_csv is None:
        raise UserError(f"dataset {cfg.dataset} needs --data-root (the folder of the download) or train_csv")
    root = Path(cfg.data_root) if cfg.data_root else None
    csv = Path(cfg.train_csv) if cfg.train_csv else default_csv(cfg.dataset, root)
    ds = load_table(cfg.dataset, csv, root, cfg.valid_csv, cfg.views, cfg.projections, need_files,
                    cfg.path_column, cfg.patient_column, cfg.split_column, cfg.labels, test_csv=cfg.test_csv)
    ds = assign_splits(ds, cfg.val_fraction, cfg.test_fraction, cfg.split_seed, cfg.protocol)
    if cfg.max_train_images:
        train = subsample_patients(ds.split("train"), cfg.max_train_images, cfg.split_seed)
        ds.frame = pd.concat([train, ds.frame[ds.frame["split"] != "train"]]).reset_index(drop=True)
    labels = resolve_label_set(cfg.labels, ds.labels)
    for part in ("train", "val", "test"):
        if ds.split(part).empty:
            raise UserError(f"{ds.source}: the {part} split is empty ({len(ds.frame)} images in all); "
                            f"use more data or change val_fraction / test_fraction")
    return ds, labels

"""The data set formats: one table mapping a format name to its loader, default label file, labels and flags.

This is the one place to add a data set format (see docs/extending.md). The command line's `--dataset` choices,
`data inspect`, `prepare` (through `benchmark.data.load`) and the report's published reference numbers all read
this table. Loaders are named as "module:function" and imported only when used, so that reading the table (for
`--help`) imports nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmark.errors import UserError


@dataclass(frozen=True)
class LoadOptions:
    """What a loader may need besides the label file and the data root (all from the Config)."""

    valid_csv: Path | None = None  # a second label file holding the official validation set (CheXpert)
    test_csv: Path | None = None  # a label file holding the official test set (CheXpert's released test labels)
    include_valid: bool = True  # read the validation file beside the label file, if any
    need_files: bool = True  # look for the image files (NIH's archive folders); False for `data inspect`
    path_column: str = "Path"
    patient_column: str | None = None
    split_column: str | None = None
    labels: object = "all"  # for formats whose label columns are not fixed: a list, or "all" to detect them


@dataclass(frozen=True)
class DatasetFormat:
    """One data set format. `loader` is "module:function" taking (csv: Path, root: Path, LoadOptions) and
    returning (frame, labels) in the shape `benchmark.data.table` describes."""

    name: str
    loader: str
    label_files: tuple = ()  # where the label file lies under a data root, first match wins; () = must be given
    test_files: tuple = ()  # official test label files looked for beside the label file (when test_csv is not set)
    labels: tuple | None = None  # the format's own label list; None = read from the file
    has_studies: bool = False  # several images (views) per study, which scoring may reduce to one
    synthetic: bool = False  # generated data: every output says so
    references: tuple = ()  # keys of reports.references that were measured on this format
    help: str = ""
    notes: dict = field(default_factory=dict)

    def load(self) -> Callable:
        module, func = self.loader.split(":")
        return getattr(importlib.import_module(module), func)


def _chexpert_files():
    return ("train.csv", "CheXpert-v1.0-small/train.csv", "CheXpert-v1.0/train.csv")


FORMATS: dict[str, DatasetFormat] = {}


def register(fmt: DatasetFormat) -> None:
    FORMATS[fmt.name] = fmt


register(DatasetFormat(
    "phantom", "benchmark.data.chexpert:load_chexpert", label_files=_chexpert_files(), labels=None,
    has_studies=True, synthetic=True,
    help="the built-in SYNTHETIC phantom, in the CheXpert layout (made on first use under data_root)"))
register(DatasetFormat(
    "chexpert", "benchmark.data.chexpert:load_chexpert", label_files=_chexpert_files(), labels=None,
    has_studies=True, references=("chexpert",), test_files=("test_labels.csv", "test.csv"),
    help="CheXpert v1.0 / v1.0-small (Irvin et al. 2019): train.csv and valid.csv"))
register(DatasetFormat(
    "nih", "benchmark.data.nih:load_nih",
    label_files=("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv.gz",
                 "Data_Entry_2017.csv.gz"),
    references=("chexnet",),
    help="NIH ChestX-ray14 (Wang et al. 2017): Data_Entry_2017*.csv, train_val_list.txt, test_list.txt"))
register(DatasetFormat(
    "csv", "benchmark.data.generic:load_generic_csv",
    help="any CSV with a path column and label columns (1, 0, -1, blank)"))


def get_format(name: str) -> DatasetFormat:
    if name not in FORMATS:
        raise UserError(f"unknown dataset {name!r}; use one of {', '.join(FORMATS)}")
    return FORMATS[name]


def names() -> tuple:
    return tuple(FORMATS)


def default_csv(dataset: str, root: Path) -> Path:
    """The label file a download keeps under its root."""
    fmt = get_format(dataset)
    if not fmt.label_files:
        raise UserError(f"--dataset {dataset} needs --csv (or train_csv in the config) naming the label file")
    for rel in fmt.label_files:
        if (root / rel).is_file():
            return root / rel
    raise UserError(f"no {' or '.join(sorted({Path(r).name for r in fmt.label_files}))} in {root}; point "
                    f"--data-root at the unpacked {dataset} download, or name the label file with --csv")

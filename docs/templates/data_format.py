"""TEMPLATE: a data set format (copy this file, then edit the TODOs). docs/extending.md, "A data set format".

The example format is a hospital export: one label file, ``labels.csv``, with one row per image::

    Image,Patient,Accession,ViewPosition,Partition,Sex,Age,Atelectasis,Cardiomegaly,...
    images/p0001/a01/1.png,p0001,a01,PA,train,F,61,1,,...

``Image`` is relative to the data root, ``Partition`` is train / val / test (blank: train), and each label column
holds 1, 0, -1 (uncertain) or blank. tests/test_templates.py loads this very file, so it cannot fall out of step
with the code.

Plugging it in:
- Python API, this process only: importing the module runs `register(...)` at the bottom; then
  `benchmark.data.load.load_table(NAME, csv, root)` and `Config(dataset=NAME)` accept it.
- The command line: a sweep trains each model in a fresh `python -m benchmark train` process, which never imports
  this module, so the registration must live in our table: copy this file to `benchmark/data/<name>.py` and move
  the `register(DatasetFormat(...))` call below into `benchmark/data/formats.py`, after its last `register(...)`
  (the "csv" entry), with the loader string spelled out ("benchmark.data.<name>:load_hospital_export"). The table
  names loaders as "module:function" and imports them only when used, so `--help` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.formats import DatasetFormat, LoadOptions, register
from benchmark.data.table import check_inside, demographics, numeric_labels, read_table
from benchmark.errors import UserError

NAME = "hospital_export"  # TODO: the --dataset name
LABEL_FILE = "labels.csv"  # TODO: where the label file lies under the data root (--csv overrides it)
# TODO: the format's labels, in the file's order. A fixed list makes a missing column an error instead of a
# silently smaller label set; use labels=None in DatasetFormat (and read them from the file) if they vary.
LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
# TODO: your file's column names for the meta columns of benchmark/data/table.py
PATH, PATIENT, STUDY, VIEW, PARTITION = "Image", "Patient", "Accession", "ViewPosition", "Partition"
SPLITS = {"": "train", "train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def load_hospital_export(csv: Path, root: Path, options: LoadOptions) -> tuple[pd.DataFrame, tuple]:
    """One row per image with the columns of benchmark/data/table.py, then one column per label (1, 0, -1, NaN)."""
    # read_table: a missing file, an empty file or a missing column is one line naming the file and the column
    frame = read_table(csv, required=(PATH, PATIENT, STUDY, VIEW, PARTITION, *LABELS))
    paths = frame[PATH].astype(str)
    # the images are opened as root/PATH: refuse absolute paths and "..", which would read outside the data root
    check_inside(paths, csv)
    position = frame[VIEW].fillna("").astype(str).str.strip().str.upper()
    partition = frame[PARTITION].fillna("").astype(str).str.strip().str.lower()
    bad = ~partition.isin(list(SPLITS))
    if bad.any():  # the same one-line shape as numeric_labels' errors: file, column, line (header = line 1), value
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(f"{csv}: column {PARTITION!r}, line {i + 2}: value {frame[PARTITION].iloc[i]!r} is not "
                        f"train, val or test (or blank)")
    out = pd.DataFrame({
        "path": paths,  # as written: run folders, predictions and error messages show this
        "file": str(root) + os.sep + paths,  # absolute: what the image cache decodes
        "patient": frame[PATIENT].astype(str),  # splits and the bootstrap resample patients, never images
        "study": frame[STUDY].astype(str),  # the scoring unit when has_studies (several views of one study)
        "view": np.where(position.isin(["LATERAL", "LL", "RL"]), "lateral", "frontal"),  # `views: frontal` filters
        "projection": position.where(position.isin(["AP", "PA", "LL", "RL"]), ""),  # the AP/PA subgroups
        **demographics(frame),  # sex and age from the usual column names (Sex / Age here): the subgroup analysis
        "split": partition.map(SPLITS).to_numpy(),
    })
    # numeric_labels: anything but 1, 0, -1 or blank is one line naming the file, column, line and value
    out = pd.concat([out, numeric_labels(frame, LABELS, csv)], axis=1)
    # The partition column decides the split as given (protocol "auto"; what it leaves empty, val or test, is carved
    # from train by patient) and the report names it. A loader reading other files (a split list, say) also sets
    # out.attrs["sources"] to their paths, so that the run's fingerprint notices when they change.
    out.attrs["user_split"] = f"column {PARTITION!r} of {csv}"
    return out, LABELS


# TODO: when you copy this into benchmark/data/formats.py, write the loader as "benchmark.data.<name>:<function>".
register(DatasetFormat(
    NAME, f"{__name__}:load_hospital_export", label_files=(LABEL_FILE,), labels=LABELS, has_studies=True,
    help="TODO: one line for --help: the data set and its paper"))

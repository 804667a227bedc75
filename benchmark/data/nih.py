"""NIH ChestX-ray14 (Wang et al. 2017): ``Data_Entry_2017*.csv`` with 'Finding Labels' joined by '|', the official
``train_val_list.txt`` / ``test_list.txt``, and the images in ``images/`` or the archives' ``images_0NN/images``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.formats import LoadOptions
from benchmark.data.labels import NIH_14
from benchmark.data.table import check_inside, demographics, read_table
from benchmark.errors import UserError


def image_index(root: Path) -> dict[str, str]:
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


def load_nih(csv: Path, root: Path, options: LoadOptions) -> tuple[pd.DataFrame, tuple]:
    """Split 'Finding Labels' into the 14 labels (1/0); the official split lists where present."""
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
    check_inside("images/" + names, csv, written=names)  # opened as images/NAME (or in an archive folder)
    index = image_index(root) if options.need_files else {}
    default_dir = str(root / "images") + os.sep
    files = names.map(index).fillna(default_dir + names) if index else default_dir + names
    out = pd.DataFrame({
        "path": names,
        "file": files,
        "patient": frame["Patient ID"].astype(str),
        "study": names.str.replace(".png", "", regex=False),
        "view": "frontal",
        "projection": frame["View Position"].fillna("").astype(str) if "View Position" in frame else "",
        **demographics(frame),
        "split": "train",
    })
    out = pd.concat([out, onehot.astype(np.float32)], axis=1)
    for folder in (root, csv.parent):
        test_list = folder / "test_list.txt"
        if test_list.is_file():
            test_names = set(test_list.read_text().split())
            out.loc[out["path"].isin(test_names), "split"] = "test"
            sources = [str(test_list)]
            train_list = folder / "train_val_list.txt"
            if train_list.is_file():
                listed = test_names | set(train_list.read_text().split())
                out = out[out["path"].isin(listed)]
                sources.append(str(train_list))
            out.attrs["official_test"] = str(test_list)
            out.attrs["test_source"] = "test_list.txt"
            out.attrs["sources"] = sources
            break
    return out, NIH_14

"""Writing the phantom: patients, studies and views planned in CheXpert's proportions, rendered in parallel, and
written as ``CheXpert-v1.0-small/{train,valid}/patient*/study*/view*_{frontal,lateral}.jpg`` with ``train.csv`` and
``valid.csv`` in CheXpert's format."""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from benchmark.cores import usable_cores
from benchmark.data.label_stats import load_label_stats
from benchmark.data.labels import CHEXPERT_14
from benchmark.data.table import PHANTOM_MARKER
from benchmark.errors import UserError
from benchmark.phantom.anatomy import Anatomy
from benchmark.phantom.labels import sample_labels, truth_from_labels
from benchmark.phantom.render import expose, render_frontal, render_lateral
from benchmark.runs.ownership import FolderLock, write_marker

FOLDER = "CheXpert-v1.0-small"
PARTIAL_MARKER = ".cxr-bench-phantom-partial"  # in the folder a phantom is written in before it is complete
LOCK = ".cxr-bench-phantom.lock"  # beside the phantom: one make-phantom at a time writes into a folder


def _is_partial(folder: Path) -> bool:
    return (folder / PARTIAL_MARKER).is_file()


def check_target(out: Path) -> None:
    """The phantom writes only into a missing or empty folder, or one that holds nothing but a phantom it made
    (and its unfinished partial folder); anything else, a download above all, is refused and left untouched."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give the phantom a missing or empty folder")
    if not out.is_dir():
        return
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.name == LOCK and entry.is_file() and not entry.is_symlink():
            continue
        if entry.name == FOLDER and entry.is_dir() and (entry / PHANTOM_MARKER).is_file():
            continue
        if entry.name == FOLDER + ".partial" and entry.is_dir() and _is_partial(entry):
            continue
        foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        what = (f"{FOLDER}/ without the phantom's {PHANTOM_MARKER}, which looks like a real CheXpert download"
                if f"{FOLDER}/" in foreign else shown)
        raise UserError(f"{out} holds files that are not a cxr-bench phantom ({what}); the synthetic phantom is "
                        f"written only into a missing or empty folder, or over a phantom it made. Nothing was "
                        f"changed: choose another folder for the phantom, or, to train on a real download, use "
                        f"a profile for it (e.g. --config configs/chexpert.yaml)")


def _plan(n: int, seed: int, stats: dict) -> list[dict]:
    """Patients, studies and views for n images, in the proportions of CheXpert."""
    rng = np.random.default_rng(seed)
    rows = []
    patient = 0
    while len(rows) < n:
        patient += 1
        studies = 1 + min(int(rng.geometric(1 / 1.9)) - 1, 6)
        age = int(np.clip(rng.normal(stats["age_mean"], stats["age_sd"]), 18, 90))
        sex = "Female" if rng.random() < stats["female_share"] else "Male"
        for study in range(1, studies + 1):
            views = ["frontal"] + (["lateral"] if rng.random() < stats["lateral_share"] / (1 - stats["lateral_share"]) else [])
            for v, view in enumerate(views, 1):
                rows.append({"patient": patient, "study": study, "view": view, "index": v, "age": age, "sex": sex,
                             "projection": ("AP" if rng.random() < stats["ap_share"] else "PA") if view == "frontal" else ""})
    return rows[:n]


def _render_chunk(args) -> list[tuple[str, bytes]]:
    root, size, seed, items = args
    out = []
    for item in items:
        rng = np.random.default_rng([seed, item["patient"], item["study"], item["index"]])
        anatomy = Anatomy(np.random.default_rng([seed, item["patient"]]), size)
        strength = np.asarray(item["strength"], np.float32)
        if item["view"] == "frontal":
            img = render_frontal(strength, anatomy, rng)
        else:
            img = render_lateral(strength, anatomy, rng)
        ok, buf = cv2.imencode(".jpg", expose(img, rng, item["projection"] or "PA"), [cv2.IMWRITE_JPEG_QUALITY, 92])
        out.append((item["path"], buf.tobytes()))
    return out


def make_phantom(out: str | os.PathLike, n: int = 2000, size: int = 128, seed: int = 0, valid_share: float = 0.1,
                 workers: int | None = None) -> dict:
    """Write the phantom into OUT/CheXpert-v1.0-small. The valid set's labels are the panel's (no uncertainty)."""
    if n < 20:
        raise UserError(f"make-phantom --n {n}: use at least 20 images")
    if size < 32:
        raise UserError(f"make-phantom --size {size}: use at least 32 px")
    start = time.perf_counter()
    stats = load_label_stats()
    out = Path(out)
    check_target(out)
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out, "make-phantom", LOCK):  # a second writer into the same folder is refused, naming this one
        check_target(out)  # as it is now that no other writer can change it
        return _write_phantom(out, n, size, seed, valid_share, workers, stats, start)


def _write_phantom(out: Path, n: int, size: int, seed: int, valid_share: float, workers: int | None, stats: dict,
                   start: float) -> dict:
    import pandas as pd

    root = out / FOLDER
    tmp = out / (FOLDER + ".partial")
    if tmp.is_dir():  # ours (check_target): an interrupted earlier write
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / PARTIAL_MARKER).write_text("an unfinished cxr-bench phantom; deleted by the next make-phantom here\n")
    plan = _plan(n, seed, stats)
    rng = np.random.default_rng(seed + 1)
    # one set of labels per study: frontal and lateral views of a study share their findings
    study_keys = sorted({(r["patient"], r["study"]) for r in plan})
    raw = sample_labels(len(study_keys), rng, stats)
    strength, panel = truth_from_labels(raw, rng)
    by_study = {k: i for i, k in enumerate(study_keys)}
    patients = sorted({r["patient"] for r in plan})
    n_valid = max(2, int(round(valid_share * len(patients))))
    valid_patients = set(patients[-n_valid:])
    rows = {"train": [], "valid": []}
    for r in plan:
        part = "valid" if r["patient"] in valid_patients else "train"
        r["path"] = f"{FOLDER}/{part}/patient{r['patient']:05d}/study{r['study']}/view{r['index']}_{r['view']}.jpg"
        i = by_study[(r["patient"], r["study"])]
        r["strength"] = strength[i].tolist()
        labels = panel[i] if part == "valid" else raw[i]
        rows[part].append({"Path": r["path"], "Sex": r["sex"], "Age": r["age"],
                           "Frontal/Lateral": r["view"].capitalize(), "AP/PA": r["projection"],
                           **{name: labels[j] for j, name in enumerate(CHEXPERT_14)}})
    workers = workers or usable_cores()
    chunks = [plan[i:i + 64] for i in range(0, len(plan), 64)]
    jobs = [(str(tmp), size, seed, c) for c in chunks]
    made_dirs = set()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(_render_chunk, jobs):
            for path, data in result:
                target = tmp / path.split("/", 1)[1]
                if target.parent not in made_dirs:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made_dirs.add(target.parent)
                target.write_bytes(data)
    for part, part_rows in rows.items():
        frame = pd.DataFrame(part_rows)
        frame.to_csv(tmp / f"{part}.csv", index=False, float_format="%.1f")
    (tmp / PHANTOM_MARKER).write_text(
        "SYNTHETIC DATA. This folder is the cxr-bench phantom: procedurally rendered images that imitate chest "
        f"radiographs, with labels sampled at CheXpert's rates. Not real patients. n={n} size={size} seed={seed}\n")
    write_marker(tmp, "phantom")
    (tmp / PARTIAL_MARKER).unlink()
    if root.is_dir():  # a phantom made earlier (check_target): replaced
        shutil.rmtree(root)
    tmp.rename(root)
    seconds = time.perf_counter() - start
    return {"root": str(root), "images": len(plan), "patients": len(patients), "seconds": seconds,
            "images_per_s": len(plan) / seconds}


def phantom_is_complete(root: str | os.PathLike) -> bool:
    root = Path(root)
    return (root / PHANTOM_MARKER).is_file() and (root / "train.csv").is_file() and (root / "valid.csv").is_file()

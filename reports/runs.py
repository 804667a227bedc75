"""Reading run directories for the report: everything it shows about a run comes from the run's files
(`benchmark.runs.rundir` names them). The metrics are read from metrics.json, the one place they are computed; they
are computed again from the prediction files only for a run that has none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmark.errors import UserError
from benchmark.runs.ownership import is_ours
from benchmark.runs.rundir import (
    CONFIG,
    ENVIRONMENT,
    EXTERNAL,
    FINGERPRINT,
    GALLERY,
    GRADCAM,
    HISTORY,
    IMPORTED_KIND,
    METRICS,
    REQUESTED,
    RUNS,
    STATUS,
    SWEEP_CONFIG,
    THRESHOLDS,
    TIMING,
    is_imported,
    predictions_file,
    read_json,
    read_status,
)
from benchmark.runs.rundir import read_csv as read_run_csv


def is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in (CONFIG, REQUESTED, STATUS))


def data_differs(run_dir: Path) -> str | None:
    """What of a sweep's run was trained on other data than the sweep records (its label files' contents, the
    splits, the images), from the two fingerprint.json files; None when they agree or either is missing. Words
    without paths, so that the public report may show them."""
    if run_dir.parent.name != RUNS:
        return None
    sweep = (read_json(run_dir.parent.parent / FINGERPRINT) or {}).get("data")
    run = (read_json(run_dir / FINGERPRINT) or {}).get("data")
    if not sweep or not run:
        return None
    what = []
    if sorted(run.get("label_files", {}).values()) != sorted(sweep.get("label_files", {}).values()):
        what.append("the label files")
    if run.get("splits") != sweep.get("splits"):
        what.append("the splits")
    images = sweep.get("images", {})
    if any(images.get(size) not in (None, key) for size, key in run.get("images", {}).items()):
        what.append("the images")
    return ", ".join(what) or None


def load_external(run_dir: Path) -> dict:
    """{name: metrics} of the run's external test sets (RUN/external/<name>/metrics.json)."""
    out = {}
    folder = run_dir / EXTERNAL
    if folder.is_dir():
        for sub in sorted(folder.iterdir()):
            metrics = read_json(sub / METRICS) if sub.is_dir() else None
            if metrics and metrics.get("test"):
                out[sub.name] = metrics
    return out


def find_runs(path: Path, plan: list[str] | None = None) -> list[Path]:
    """The run directories a report shows: the folder itself if it is one run; else the runs of the sweep's
    current plan (`plan`, or the one its sweep.yaml gives), in plan order; else every run folder under it."""
    from benchmark.runs.rundir import IMPORTED

    if any((path / name).is_file() for name in (CONFIG, REQUESTED, IMPORTED)):
        return [path]
    runs_dir = path / RUNS if (path / RUNS).is_dir() else path
    if plan is None and (path / SWEEP_CONFIG).is_file():
        from benchmark.runs.plan import plan_runs
        from benchmark.runs.rundir import read_config

        plan = [name for name, _ in plan_runs(read_config(path, SWEEP_CONFIG))]
    if plan is not None:
        runs = [runs_dir / name for name in plan if (runs_dir / name).is_dir()] + imported_runs(runs_dir)
    else:
        runs = sorted(p for p in runs_dir.iterdir() if p.is_dir() and is_run_dir(p))
    if not runs:
        raise UserError(f"{path} holds no run directories (folders with {CONFIG}); pass a sweep or run folder")
    return runs


def safe_gallery(run_dir: Path, entries) -> list[dict]:
    """The Grad-CAM entries whose file is a plain name inside the run's gradcam/ folder (a report embeds only its
    own files: not an absolute path or one that climbs out, whatever gallery.json says)."""
    out = []
    for e in entries if isinstance(entries, list) else []:
        name = str(e.get("file", "")) if isinstance(e, dict) else ""
        if not name or Path(name).name != name or name.startswith(".") or "\\" in name:
            continue
        if (run_dir / GRADCAM / name).is_file():
            out.append(e)
    return out


def truth_probs(frame: pd.DataFrame, labels) -> tuple[np.ndarray, np.ndarray]:
    """The y_true_<label> and y_prob_<label> columns of a prediction file as (n, L) arrays (NaN = ignored)."""
    y = frame[[f"y_true_{lab}" for lab in labels]].to_numpy(dtype=float, na_value=np.nan)
    p = frame[[f"y_prob_{lab}" for lab in labels]].to_numpy(dtype=float)
    return y, p


def load_run(run_dir: Path, n_boot: int) -> dict:
    """Everything the report shows about one run, read from its files."""
    from benchmark.evaluation.metrics import score_split
    from benchmark.runs.rundir import IMPORTED

    cfg_file = run_dir / CONFIG if (run_dir / CONFIG).is_file() else run_dir / REQUESTED
    cfg = (yaml.safe_load(cfg_file.read_text()) or {}) if cfg_file.is_file() else {}
    imported = read_json(run_dir / IMPORTED)  # another model's predictions (benchmark.sweep.imported): no training files
    if imported:
        cfg = imported.get("config") or {}
    status = read_status(run_dir)
    run = {"name": run_dir.name, "dir": run_dir, "config": cfg, "status": status.get("status", "missing"),
           "error": status.get("error"), "timing": read_json(run_dir / TIMING, {}) or {},
           "environment": read_json(run_dir / ENVIRONMENT, {}) or {},
           "synthetic": bool(status.get("synthetic", cfg.get("dataset") == "phantom")), "imported": imported}
    run["data_differs"] = data_differs(run_dir)  # marked on the page and in summary.json, not silently mixed in
    hist = run_dir / HISTORY
    run["history"] = read_run_csv(hist) if hist.is_file() and hist.stat().st_size else None
    pred_test = run_dir / predictions_file("test")
    if run["status"] != "done" or not pred_test.is_file():
        return run
    thresholds = read_json(run_dir / THRESHOLDS, {}) or {}
    labels = thresholds.get("labels") or [c[len("y_prob_"):] for c in read_run_csv(pred_test, nrows=0).columns
                                          if c.startswith("y_prob_")]
    run["labels"] = labels
    run["thresholds"] = thresholds.get("thresholds")
    saved = read_json(run_dir / METRICS, {}) or {}
    for split in ("val", "test"):
        path = run_dir / predictions_file(split)
        if not path.is_file():
            continue
        frame = read_run_csv(path)
        y, p = truth_probs(frame, labels)
        run[f"{split}_frame"] = frame
        run[f"{split}_y"], run[f"{split}_p"] = y, p
        run[f"{split}_metrics"] = saved.get(split) or score_split(  # a run without metrics.json
            frame, y, p, labels, "image", "max", run["thresholds"], n_boot=n_boot if split == "test" else 0)
    run["protocol"] = saved.get("protocol")
    run["external"] = load_external(run_dir)
    run["gallery"] = safe_gallery(run_dir, read_json(run_dir / GALLERY) or [])
    run["model_card"] = _model_card(run_dir) if saved.get("test") else None
    timed = (read_json(run_dir / "export" / "perf.json") or {}).get("engines") or {}  # `perf export`'s figures
    run["export_speed"] = {engine: row.get("ms_batch1") for engine, row in timed.items()}
    return run


def _model_card(run_dir: Path) -> dict:
    """The run's model card (model_card.json, or made from its files for a run finished before cards), in full and
    in its public form."""
    from benchmark.evaluation.model_card import MODEL_CARD, model_card, public_card

    card = read_json(run_dir / MODEL_CARD) or model_card(run_dir)
    return {"full": card, "public": public_card(card)}


def imported_runs(runs_dir) -> list:
    """The imported run folders of a sweep's runs/ (they are in no plan), by name."""
    if not Path(runs_dir).is_dir():
        return []
    return sorted(p for p in Path(runs_dir).iterdir()
                  if p.is_dir() and is_ours(p, (IMPORTED_KIND,)) and is_imported(p))

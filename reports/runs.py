"""Reading run directories for the report: everything it shows about a run comes from the run's files, read
through `benchmark.runs.run.Run` (`load_run` gives a typed `ReportRun`). The metrics are read from metrics.json, the
one place they are computed; they are computed again from the prediction files only for a run that has none
(`benchmark.runs.compat.split_metrics`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.runs import compat
from benchmark.runs.ownership import is_ours
from benchmark.runs.run import Run
from benchmark.runs.run import is_run_dir as is_run_dir  # the report's name for it, as before
from benchmark.runs.rundir import (
    CONFIG,
    FINGERPRINT,
    IMPORTED,
    IMPORTED_KIND,
    REQUESTED,
    RUNS,
    SWEEP_CONFIG,
    is_imported,
    read_json,
)


def data_differs(run_dir: Path | Run) -> str | None:
    """What of a sweep's run was trained on other data than the sweep records (its label files' contents, the
    splits, the images), from the two fingerprint.json files; None when they agree or either is missing. Words
    without paths, so that the public report may show them."""
    folder = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    if folder.path.parent.name != RUNS:
        return None
    sweep = (read_json(folder.path.parent.parent / FINGERPRINT) or {}).get("data")
    run = (folder.fingerprint or {}).get("data")
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


def find_runs(path: Path, plan: list[str] | None = None) -> list[Path]:
    """The run directories a report shows: the folder itself if it is one run; else the runs of the sweep's
    current plan (`plan`, or the one its sweep.yaml gives), in plan order; else every run folder under it."""
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


def truth_probs(frame: pd.DataFrame, labels) -> tuple[np.ndarray, np.ndarray]:
    """The y_true_<label> and y_prob_<label> columns of a prediction file as (n, L) arrays (NaN = ignored)."""
    y = frame[[f"y_true_{lab}" for lab in labels]].to_numpy(dtype=float, na_value=np.nan)
    p = frame[[f"y_prob_{lab}" for lab in labels]].to_numpy(dtype=float)
    return y, p


@dataclass(eq=False)
class ReportRun:
    """Everything the report shows about one run, read from its folder through `benchmark.runs.run.Run`: typed
    fields, those of a finished run (labels, predictions, metrics, ...) left at their defaults for any other. The
    comparison fills in `configuration`, `boot_macro`, `is_reference` and `vs_reference`, the public report
    redacts fields in place. `run["key"]`, `run.get("key", default)` and `run["key"] = value` reach the same
    fields, for code that takes any run record (benchmark.evaluation.compare, which may not import the report)."""

    run: Run
    name: str
    dir: Path
    config: dict  # as written (config.yaml, else requested.yaml; an imported run's from imported.json)
    status: str  # running, done, failed, interrupted, pruned or missing
    error: str | None = None
    timing: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    synthetic: bool = False
    imported: dict | None = None
    data_differs: str | None = None
    history: pd.DataFrame | None = None
    # a finished run's
    labels: list = field(default_factory=list)
    thresholds: dict | None = None
    val_frame: pd.DataFrame | None = None
    val_y: np.ndarray | None = None
    val_p: np.ndarray | None = None
    val_metrics: dict | None = None
    test_frame: pd.DataFrame | None = None
    test_y: np.ndarray | None = None
    test_p: np.ndarray | None = None
    test_metrics: dict | None = None
    protocol: dict | None = None
    external: dict = field(default_factory=dict)
    gallery: list = field(default_factory=list)
    model_card: dict | None = None  # {"full": card, "public": its public form}
    export_speed: dict = field(default_factory=dict)  # engine: ms per batch of one (`perf export`)
    # the comparison's (reports.build)
    configuration: str | None = None
    boot_macro: Any = None
    is_reference: bool = False
    vs_reference: dict | None = None

    def __getitem__(self, key: str):
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value) -> None:
        if key not in _FIELDS:
            raise KeyError(f"a report's run has no field {key!r}")
        setattr(self, key, value)

    def __contains__(self, key: str) -> bool:
        return key in _FIELDS and getattr(self, key) is not None

    def get(self, key: str, default=None):
        """The field's value, `default` where it is None (as a missing key of the dict the report once used)."""
        value = getattr(self, key, None) if key in _FIELDS else None
        return default if value is None else value


_FIELDS = frozenset(f.name for f in fields(ReportRun))


def load_run(run_dir: Path | Run, n_boot: int) -> ReportRun:
    """Everything the report shows about one run, read from its files."""
    from benchmark.evaluation.metrics import score_split

    src = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    cfg = src.config_values
    status = src.status
    run = ReportRun(src, src.name, src.path, cfg, status.state, status.error, src.timing, src.environment,
                    src.synthetic, src.imported)
    run.data_differs = data_differs(src)  # marked on the page and in summary.json, not silently mixed in
    run.history = src.history
    if run.status != "done" or not src.has_predictions("test"):
        return run
    labels = run.labels = src.labels
    run.thresholds = src.thresholds
    saved = src.metrics
    for split in ("val", "test"):
        frame = src.predictions(split)
        if frame is None:
            continue
        y, p = truth_probs(frame, labels)
        setattr(run, f"{split}_frame", frame)
        setattr(run, f"{split}_y", y)
        setattr(run, f"{split}_p", p)
        setattr(run, f"{split}_metrics", compat.split_metrics(
            saved, split, lambda frame=frame, y=y, p=p, split=split: score_split(
                frame, y, p, labels, compat.UNSCORED_UNIT, compat.UNSCORED_REDUCE, run.thresholds,
                n_boot=n_boot if split == "test" else 0)))
    run.protocol = saved.get("protocol")
    run.external = src.external
    run.gallery = src.gallery
    run.model_card = _model_card(src) if saved.get("test") else None
    timed = src.export_perf.get("engines") or {}  # `perf export`'s figures
    run.export_speed = {engine: row.get("ms_batch1") for engine, row in timed.items()}
    return run


def _model_card(run: Run) -> dict:
    """The run's model card (model_card.json, or made from its files for a run finished before cards), in full and
    in its public form."""
    from benchmark.evaluation.model_card import model_card, public_card

    card = compat.model_card(run.model_card, lambda: model_card(run.path))
    return {"full": card, "public": public_card(card)}

def imported_runs(runs_dir) -> list:
    """The imported run folders of a sweep's runs/ (they are in no plan), by name."""
    if not Path(runs_dir).is_dir():
        return []
    return sorted(p for p in Path(runs_dir).iterdir()
                  if p.is_dir() and is_ours(p, (IMPORTED_KIND,)) and is_imported(p))

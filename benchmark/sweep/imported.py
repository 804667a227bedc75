"""Outside models beside ours: `import-predictions` makes another model's prediction file a run of a sweep.

The file is in the run directory's own format (`path` and `y_prob_<label>`; any other column is replaced by the
sweep's own). It is checked against the sweep's test set as the sweep's finished runs scored it (their
predictions_test.csv: the same images, patients, studies, truth and subgroup columns), then scored by the same
code as a trained run (`benchmark.evaluation.metrics.score_split`, with the same unit, study reduction and bootstrap, so that
its resamples are the ones behind every other run's intervals and comparisons). Thresholds are chosen on the
validation file when one is given, as for trained runs; without one the thresholded metrics are left out (None),
never computed at a threshold nobody chose. No TensorFlow here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.runs.rundir import IMPORTED, is_imported
from benchmark.runs.rundir import IMPORTED_KIND as KIND

# summary metrics that need a threshold chosen on validation (left out without --val)
THRESHOLDED = ("f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_macro", "specificity_macro",
               "accuracy_macro", "hamming_loss", "subset_accuracy")
NO_THRESHOLDS = "no validation predictions were imported (--val), so no thresholds were chosen"


def reference_run(sweep: Path) -> Path:
    """A finished trained run of the sweep: its prediction files are the sweep's test (and validation) set."""
    from benchmark.runs.rundir import METRICS, RUNS, THRESHOLDS, predictions_file, read_status
    from reports.runs import find_runs

    for run in find_runs(sweep):
        if (not is_imported(run) and read_status(run).get("status") == "done"
                and all((run / f).is_file() for f in (predictions_file("test"), METRICS, THRESHOLDS))):
            return run
    raise UserError(f"{sweep / RUNS} holds no finished trained run to take the test set from; run the sweep "
                    f"first, then import")


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: no such file ({what})")
    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UserError(f"{path} is not a readable CSV file ({type(exc).__name__}: {str(exc)[:80]})") from None
    if "path" not in frame.columns:
        raise UserError(f"{path} has no 'path' column; a prediction file has path and y_prob_<label> columns")
    return frame


def _label_columns(frame: pd.DataFrame, path: Path, labels: list[str]) -> dict:
    """{sweep label: the file's y_prob_ column}, names mapped through the one label table (NIH's Effusion is
    Pleural Effusion); an unknown label or a missing one is a UserError naming it."""
    from benchmark.data.labels import canonical

    ours = {canonical(lab): lab for lab in labels}
    found = {}
    for col in (c for c in frame.columns if c.startswith("y_prob_")):
        label = ours.get(canonical(col[len("y_prob_"):]))
        if label is None:
            raise UserError(f"{path}: column {col}: label {col[len('y_prob_'):]!r} is not one of the sweep's labels "
                            f"({', '.join(labels)}); rename or drop the column")
        if label in found:
            raise UserError(f"{path}: columns {found[label]} and {col} are both label {label!r}; keep one")
        found[label] = col
    missing = [lab for lab in labels if lab not in found]
    if missing:
        raise UserError(f"{path} has no y_prob_ column for the sweep's label {missing[0]!r}"
                        f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; every label needs one")
    return found


def _probabilities(frame: pd.DataFrame, path: Path, columns: dict) -> np.ndarray:
    """The (n, L) probabilities; a value that is not a number in [0, 1] is a UserError naming its row."""
    out = np.empty((len(frame), len(columns)))
    for j, col in enumerate(columns.values()):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~((values >= 0) & (values <= 1)))  # NaN fails both
        if len(bad):
            i = bad[0]
            raise UserError(f"{path}: column {col}, row {i + 2} (path {frame['path'].iloc[i]}): "
                            f"{frame[col].iloc[i]} is not a probability in [0, 1]")
        out[:, j] = values
    return out


def matched_table(path: Path, reference: pd.DataFrame, labels: list[str], split: str) -> pd.DataFrame:
    """The user's predictions on the reference split's rows: its columns but y_prob_ from the file, matched by
    path. Every unit of the split must be there once, and nothing else."""
    frame = _read_csv(path, f"the {split} predictions")
    columns = _label_columns(frame, path, labels)
    paths = frame["path"].astype(str)
    dup = paths[paths.duplicated()]
    if len(dup):
        raise UserError(f"{path}: path {dup.iloc[0]} has more than one row; give each image once")
    known = set(reference["path"].astype(str))
    extra = paths[~paths.isin(known)]
    if len(extra):
        raise UserError(f"{path}: path {extra.iloc[0]} (row {extra.index[0] + 2}) is not in the sweep's {split} set "
                        f"({len(known)} images){f'; {len(extra) - 1} more are not either' if len(extra) > 1 else ''}"
                        f"; predict the {split} set's images only")
    missing = reference["path"].astype(str)[~reference["path"].astype(str).isin(set(paths))]
    if len(missing):
        raise UserError(f"{path} has no row for the {split} set's image {missing.iloc[0]}"
                        f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; every {split} image "
                        f"needs a prediction")
    probs = _probabilities(frame, path, columns)
    order = pd.Series(np.arange(len(frame)), index=paths.to_numpy())[reference["path"].astype(str)].to_numpy()
    table = reference.copy()
    for j, label in enumerate(labels):
        table[f"y_prob_{label}"] = probs[order, j]
    return table


def _blank_thresholded(metrics: dict) -> None:
    """Without thresholds chosen on validation: no thresholded number (a 0.5 threshold nobody chose is not one)."""
    summary = metrics["summary"]
    for key in THRESHOLDED:
        summary[key] = None
    summary["threshold_kind"] = None
    summary["thresholds_missing"] = NO_THRESHOLDS
    for entry in metrics["per_label"].values():
        entry.pop("by_threshold", None)
    for groups in (metrics.get("subgroups") or {}).values():
        for group in groups.values():
            if "fnr" in group:
                group["fnr"], group["fnr_macro"] = {}, None


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _run_folder(sweep: Path, name: str) -> Path:
    """SWEEP/runs/NAME, which must be new, empty or an earlier import of ours (then replaced)."""
    from benchmark.runs.ownership import claim, is_ours
    from benchmark.runs.rundir import RUNS, SWEEP_CONFIG, read_config

    if not name or name.startswith(".") or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError(f"--name {name!r}: use letters, digits, '.', '-' and '_'")
    if (sweep / SWEEP_CONFIG).is_file():
        from benchmark.runs.plan import plan_runs

        if name in {n for n, _ in plan_runs(read_config(sweep, SWEEP_CONFIG))}:
            raise UserError(f"--name {name}: the sweep has a run of that name; choose another name")
    folder = sweep / RUNS / name
    if is_ours(folder) and not is_ours(folder, (KIND,)):
        raise UserError(f"{folder} is a run cxr-bench trained, not an import; choose another --name")
    return claim(folder, KIND, "an imported run", f"choose another --name or move {folder} away")


def import_predictions(sweep, name: str, test_file, val_file=None) -> dict:
    """Write SWEEP/runs/NAME as a finished run of kind "imported" from a prediction file (and optionally its
    validation predictions); returns its test summary."""
    from benchmark.evaluation.metrics import choose_thresholds, score_split
    from benchmark.evaluation.model_card import MODEL_CARD, write_model_card
    from benchmark.evaluation.scoring import score_units
    from benchmark.runs.ownership import FolderLock
    from benchmark.runs.rundir import (
        METRICS,
        RUNS,
        STATUS,
        THRESHOLDS,
        predictions_file,
        read_json,
        write_csv,
        write_json,
        write_status,
    )

    sweep = Path(sweep)
    if not (sweep / RUNS).is_dir():
        raise UserError(f"{sweep} is not a sweep folder (no {RUNS}/); pass the --out of a sweep")
    test_file, val_file = Path(test_file), Path(val_file) if val_file else None
    with FolderLock(sweep, "command (a sweep, retrain or import)"):
        ref = reference_run(sweep)
        saved = read_json(ref / METRICS)
        labels = list(read_json(ref / THRESHOLDS)["labels"])
        s = saved["test"]["summary"]
        unit, reduce = s.get("unit", "image"), s.get("reduce") or "max"
        boot = s.get("bootstrap") or {}
        n_boot = boot.get("requested", boot.get("resamples", 1000)) or 1000
        config = _config_summary(ref, name)
        tables = {"test": matched_table(test_file, pd.read_csv(ref / predictions_file("test")), labels, "test")}
        if val_file is not None:
            if not (ref / predictions_file("val")).is_file():
                raise UserError(f"{ref} has no {predictions_file('val')} to match {val_file} against")
            tables["val"] = matched_table(val_file, pd.read_csv(ref / predictions_file("val")), labels, "val")
        arrays = {split: _truth_probs(t, labels) for split, t in tables.items()}
        thresholds = None
        if "val" in tables:
            scored = score_units(tables["val"], *arrays["val"], unit, reduce)
            thresholds = choose_thresholds(scored.truth, scored.probs, labels)
        metrics = {split: score_split(tables[split], *arrays[split], labels, unit, reduce, thresholds,
                                      n_boot, curves=(split == "test"),  # as finish_run scores them
                                      min_positives=config["min_positives"])
                   for split in tables}
        if thresholds is None:
            _blank_thresholded(metrics["test"])
        metrics["synthetic"] = saved.get("synthetic", False)
        metrics["protocol"] = saved.get("protocol")
        run = _run_folder(sweep, name)
        for stale in (STATUS, MODEL_CARD):  # a replaced import is not "done" while it is being written
            (run / stale).unlink(missing_ok=True)
        for split, table in tables.items():
            write_csv(run / predictions_file(split), table)
        if thresholds is not None:
            write_json(run / THRESHOLDS, {"chosen_on": "val", "selected": "f1", "labels": labels, "unit": unit,
                                          "thresholds": thresholds})
        else:
            (run / THRESHOLDS).unlink(missing_ok=True)
            (run / predictions_file("val")).unlink(missing_ok=True)
        write_json(run / METRICS, metrics)
        write_json(run / IMPORTED, {
            "kind": KIND, "name": name, "labels": labels, "unit": unit, "reduce": reduce, "test_set_of": ref.name,
            "files": {split: {"name": f.name, "sha256": _sha256(f)}
                      for split, f in (("test", test_file), ("val", val_file)) if f is not None},
            "thresholds": "chosen on the imported validation predictions" if thresholds else NO_THRESHOLDS,
            "config": config})
        write_model_card(run, finishing=True)
        write_status(run, "done", val_auroc=metrics.get("val", {}).get("summary", {}).get("auroc_macro"),
                     test_auroc=metrics["test"]["summary"]["auroc_macro"], synthetic=metrics["synthetic"],
                     imported=True)
    return metrics["test"]["summary"]


def _truth_probs(table: pd.DataFrame, labels):
    y = table[[f"y_true_{lab}" for lab in labels]].to_numpy(dtype=float, na_value=np.nan)
    p = table[[f"y_prob_{lab}" for lab in labels]].to_numpy(dtype=float)
    return y, p


def _config_summary(ref: Path, name: str) -> dict:
    """What the report shows in place of a trained run's configuration: the data set and the test set's origin."""
    import yaml

    from benchmark.runs import compat
    from benchmark.runs.rundir import CONFIG

    cfg = (yaml.safe_load((ref / CONFIG).read_text()) or {}) if (ref / CONFIG).is_file() else {}
    keep = ("dataset", "labels", "protocol", "score_by", "study_reduce", "views", "split_seed", "bootstrap")
    # min_positives as the sweep's runs were scored with (10, the key's default, where a run predates it)
    return {"backbone": f"imported ({name})", **{k: cfg[k] for k in keep if k in cfg},
            "min_positives": compat.recorded_min_positives(cfg)}

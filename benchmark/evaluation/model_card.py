"""A model card per run: `RUN/model_card.json`, in the spirit of Mitchell et al. (2019), "Model Cards for Model
Reporting", and of MONAI's bundle `metadata.json`: what the model is, what it was trained and tested on, how well it
did (with confidence intervals, per subgroup and on external data), its operating points, the software it ran on,
what it is for, and the fingerprint that identifies its configuration and data.

Everything is read from the run's own files (docs/run-directory.md), so the card of any finished run can be written
again by `python -m benchmark model-card --run RUN`; nothing here imports TensorFlow. `public_card` is the form a
published report holds: no absolute path (the data's folders and label files, a weights file, an error message).
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmark.errors import UserError
from benchmark.runs.rundir import MODEL_CARD

SCHEMA = "cxr-bench model card 1"
INTENDED_USE = {
    "primary_use": "research: comparing chest-radiograph classifiers under one protocol",
    "users": "machine-learning and radiology-AI researchers",
    "out_of_scope": "clinical use of any kind (diagnosis, triage, screening, treatment decisions); this is not a "
                    "medical device and nothing it produces is for clinical use",
    "caveats": ["the labels of public chest X-ray data sets are mined from reports and are noisy",
                "performance is measured on the test set named under data.protocol only; other hospitals, scanners "
                "and populations may differ (see external_results)",
                "a label with too few positives has no AUROC; subgroups under 30 scored units have no number"],
}
# the training keys a reader needs to understand the model (the whole configuration is in config.yaml)
TRAINING_KEYS = ("backbone", "weights", "finetune", "image_size", "resize", "equalize", "policy", "blank", "loss",
                 "optimizer", "learning_rate", "weight_decay", "schedule", "batch_size", "epochs", "augment", "hflip",
                 "dropout", "precision", "keras_backend", "seed", "split_seed")
DATA_KEYS = ("dataset", "views", "score_by", "study_reduce", "val_fraction", "test_fraction",
             "train_csv", "valid_csv", "test_csv", "data_root")
SUBGROUP_KEYS = ("n", "patients", "auroc_macro", "auroc_macro_ci", "fnr_macro", "undefined")
LABEL_KEYS = ("n", "positives", "ignored", "auroc", "auroc_ci", "auprc", "brier", "ece", "undefined")


def _summary(metrics: dict | None) -> dict | None:
    """A split's summary without its curves."""
    if not metrics:
        return None
    return {k: v for k, v in metrics["summary"].items() if k not in ("roc_micro", "pr_micro")}


def _per_label(metrics: dict) -> dict:
    out = {}
    for label, m in metrics.get("per_label", {}).items():
        out[label] = {k: m[k] for k in LABEL_KEYS if k in m}
        chosen = (m.get("by_threshold") or {}).get(metrics["summary"].get("threshold_kind") or "")
        if chosen:
            out[label]["at_threshold"] = {k: chosen[k] for k in ("threshold", "precision", "recall", "specificity",
                                                                 "f1") if k in chosen}
    return out


def _subgroups(metrics: dict) -> dict:
    return {attribute: {g: {k: m[k] for k in SUBGROUP_KEYS if k in m} for g, m in groups.items()}
            for attribute, groups in (metrics.get("subgroups") or {}).items()}


def _external(run: Path) -> dict:
    from benchmark.runs.rundir import EXTERNAL, METRICS, read_json

    out = {}
    folder = run / EXTERNAL
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        record = read_json(sub / METRICS) if sub.is_dir() else None
        if record and record.get("test"):
            out[sub.name] = {"source": record.get("source"), "protocol": record.get("protocol"),
                             "synthetic": record.get("synthetic"), "summary": _summary(record["test"]),
                             "per_label": _per_label(record["test"])}
    return out


def _exports(run: Path) -> dict | None:
    """The run's exports (benchmark.evaluation.export) with their latency and size where `perf export` measured them."""
    from benchmark.runs.rundir import read_json

    exports = read_json(run / "export" / "exports.json") or {}
    timed = (read_json(run / "export" / "perf.json") or {}).get("engines", {})
    if not exports:
        return None
    return {fmt: {"file": Path(r["file"]).name, "bytes": r.get("bytes"), "max_abs_diff": r.get("max_abs_diff"),
                  "checked_images": r.get("checked_images"), "versions": r.get("versions"),
                  "latency_ms": {k: v for k, v in timed.get(fmt, {}).items() if k.startswith("ms_")} or None}
            for fmt, r in exports.items()}


def model_card(run, finishing: bool = False) -> dict:
    """The model card of a finished run (trained or imported), from its files; `finishing`: the run is writing its
    last files and its status is not yet done."""
    import yaml

    from benchmark.runs.rundir import (
        CONFIG,
        ENVIRONMENT,
        FINGERPRINT,
        IMPORTED,
        METRICS,
        THRESHOLDS,
        TIMING,
        read_json,
        read_status,
    )

    run = Path(run)
    metrics = read_json(run / METRICS)
    if (not finishing and read_status(run).get("status") != "done") or not metrics or not metrics.get("test"):
        raise UserError(f"{run} is not a finished run (status.json is not done, or no {METRICS}); a model card "
                        f"describes a finished run")
    imported = read_json(run / IMPORTED)
    cfg = (yaml.safe_load((run / CONFIG).read_text()) or {}) if (run / CONFIG).is_file() else {}
    if imported:
        cfg = imported.get("config") or {}
    timing = read_json(run / TIMING, {}) or {}
    test = metrics["test"]
    thresholds = read_json(run / THRESHOLDS)
    return {
        "schema": SCHEMA,
        "model": {"name": run.name, "kind": "imported" if imported else "trained", "backbone": cfg.get("backbone"),
                  "parameters": timing.get("params"), "flops": timing.get("flops"),
                  "input": (None if imported else f"uint8 grayscale images (batch, {cfg.get('image_size')}, "
                            f"{cfg.get('image_size')}, 1); resizing to that size is the caller's, the rest of the "
                            f"preprocessing is inside the model"),
                  "output": ("per-label probabilities, as the imported file gives them" if imported else
                             "one probability per label (independent sigmoids), in label_space's order"),
                  "files": ({"predictions": imported.get("files")} if imported else
                            {"keras": "model.keras", "operating_points": THRESHOLDS})},
        "data": {**{k: cfg[k] for k in DATA_KEYS if k in cfg}, "synthetic": bool(metrics.get("synthetic")),
                 "protocol": metrics.get("protocol"), "protocol_setting": cfg.get("protocol"),
                 "test_set_of": imported.get("test_set_of") if imported else None},
        "label_space": {"labels": test["summary"].get("labels"), "uncertainty_policy": cfg.get("policy"),
                        "blank": cfg.get("blank"),
                        "scoring": "uncertain labels are left out of every metric; labels are named in the one "
                                   "label table (benchmark.data.labels)"},
        "training": (None if imported else {**{k: cfg[k] for k in TRAINING_KEYS if k in cfg},
                                            **{k: timing.get(k) for k in ("epochs", "best_epoch", "train_seconds",
                                                                          "train_images_per_s")},
                                            "epochs_requested": cfg.get("epochs")}),
        "metrics": {"test": _summary(test), "test_per_label": _per_label(test),
                    "validation": _summary(metrics.get("val")),
                    "other": {k: _summary(v) for k, v in metrics.items()
                              if k not in ("val", "test", "synthetic", "protocol") and isinstance(v, dict)
                              and "summary" in v}},
        "subgroups": _subgroups(test),
        "external_results": _external(run),
        "operating_points": thresholds,
        "speed": {**{k: timing.get(k) for k in ("inference_ms_per_image", "inference_batch_size", "image_size")
                     if k in timing},
                  "exports": _exports(run)} if timing or _exports(run) else None,
        "environment": read_json(run / ENVIRONMENT),
        "intended_use": INTENDED_USE,
        "fingerprint": read_json(run / FINGERPRINT) or (
            {"predictions": imported.get("files")} if imported else None),
        "references": ["Mitchell et al. 2019, Model Cards for Model Reporting (FAT* '19)",
                       "MONAI bundle metadata.json"],
    }


ABSOLUTE = re.compile(r"(?<![\w.])(?:/[^\s'\"(),;]+)+|\b[A-Za-z]:\\[^\s'\"(),;]+")


def _redact(value, key=None):
    """Absolute paths out of every key and value: a path-valued key's value becomes <redacted>, a path inside a
    text <path>, a dictionary key that is a path its file name (the label files' hashes are keyed by their path)."""
    from benchmark.config import PATH_KEYS, SECRET_KEYS

    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, str) and ABSOLUTE.fullmatch(k):
                k = name = Path(k).name
                while k in out:  # two label files of one name in different folders
                    k = f"{name} ({len(out)})"
            out[k] = _redact(v, k)
        return out
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if isinstance(value, str):
        if key in PATH_KEYS or key in SECRET_KEYS or key == "platform":
            return "<redacted>"
        if key == "weights" and ("/" in value or "\\" in value):
            return "<a weights file>"
        return ABSOLUTE.sub("<path>", value)
    return value


def public_card(card: dict | None) -> dict | None:
    """The card as a published report holds it: no absolute paths, no host platform string."""
    return None if card is None else _redact(card)


def write_model_card(run, finishing: bool = False) -> Path:
    """Write RUN/model_card.json; returns its path."""
    from benchmark.runs.ownership import FolderLock, kind_of
    from benchmark.runs.rundir import IMPORTED_KIND as KIND
    from benchmark.runs.rundir import write_json

    run = Path(run)
    path = run / MODEL_CARD
    if finishing:  # the run's own process, which holds its folder
        write_json(path, model_card(run, finishing))
        return path
    if kind_of(run) not in ("run", KIND):
        raise UserError(f"{run} is not a run folder cxr-bench made; pass a run directory (SWEEP/runs/NAME)")
    with FolderLock(run, "command (train, evaluate or a sweep)"):
        write_json(path, model_card(run))
    return path

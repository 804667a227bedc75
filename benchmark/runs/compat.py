"""Reading folders written by earlier versions of cxr-bench: every rule lives here, one small function each, with
the version that wrote such folders. Nothing else guesses at an older layout; readers (`benchmark.runs.run.Run`,
the report, ownership, the cache) call these.

The versions, as the layout and the files record them:

- **before markers**: folders without `.cxr-bench` (recognised by the files written together, `legacy_kind`);
- **layout 1 without its line**: the first markers named the kind only;
- **before metrics.json, model cards, engines, scoring units, min_positives**: run folders whose files lack what
  later versions added; the readers fill it in as those versions computed it.

Old configuration key names (`backend` for `launcher`) stay declared on the key itself (`benchmark.config`,
`aliases=`); `key_name` is how a run folder's reader asks for them. No TensorFlow here, and nothing above
`benchmark.runs` is imported (readers that must compute, the report's scoring, pass it in).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from benchmark.runs.rundir import CONFIG, RUNS, STATUS, SWEEP_CONFIG

RUN_STATES = ("running", "done", "failed", "interrupted")  # what status.json says in a run of any version
# what an image cache holds: one folder per cache key (20 hex digits), builds in progress and damaged ones
CACHE_ENTRY = re.compile(r"[0-9a-f]{20}(\.partial-.+|\.damaged-\d+)?")
MARKER_LAYOUT = 1  # the layout of a marker that names none


# --- markers -------------------------------------------------------------------------------------------------------

def marker_layout(lines: list[str]) -> int:
    """The layout a marker's lines give. The first markers (layout 1) held the kind alone: no `layout N` line is
    layout 1."""
    layout = MARKER_LAYOUT
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 2 and parts[0] == "layout" and parts[1].isdigit():
            layout = int(parts[1])
    return layout


def _json_key(path: Path, key: str):
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return value.get(key) if isinstance(value, dict) else None


def legacy_kind(folder: Path, parent_kind: Callable[[Path], str | None], ignore: tuple = ()) -> str | None:
    """What a folder of a version before markers was made for, recognised by the files those versions wrote
    together (a run: status.json with its status and config.yaml; a sweep: sweep.yaml and runs/; a phantom: its
    notice and label files; an image cache: nothing but cache entries; a report: index.html and summary.json with
    its runs, inside a run or sweep of ours, as `parent_kind` says). None for anything else, so a user's folder
    that merely holds one such file is never taken. `ignore`: the marker and lock files' names."""
    folder = Path(folder)
    if (folder / CONFIG).is_file() and _json_key(folder / STATUS, "status") in RUN_STATES:
        return "run"
    if (folder / SWEEP_CONFIG).is_file() and (folder / RUNS).is_dir():
        return "sweep"
    if all((folder / name).is_file() for name in ("SYNTHETIC_PHANTOM.txt", "train.csv", "valid.csv")):
        return "phantom"
    entries = [p.name for p in folder.iterdir() if p.name not in ignore]
    if entries and all(CACHE_ENTRY.fullmatch(name) for name in entries):  # an image cache: only its entries
        return "cache"
    if ((folder / "index.html").is_file() and isinstance(_json_key(folder / "summary.json", "runs"), list)
            and folder.name in ("report", "report-public") and parent_kind(folder.parent) in ("run", "sweep")):
        return "report"
    return None


# --- the image cache -------------------------------------------------------------------------------------------------

def unlocked_build_owner(partial_name: str) -> tuple[str, int] | None:
    """(host, process id) of a partial cache build made before builds held a lock file: versions before the
    build lock named the builder in the folder's name only (`KEY.partial-HOST-PID`). None if the name gives none."""
    host, _, pid = partial_name.split(".partial-", 1)[1].rpartition("-")
    return (host, int(pid)) if pid.isdigit() else None


# --- a run folder's files ------------------------------------------------------------------------------------------

def key_name(name: str) -> str:
    """A configuration key's current name, for a key read from an old config.yaml (`backend`, the launcher's name
    before `launcher`); the aliases are declared on the keys (benchmark.config)."""
    from benchmark.config import ALIASES

    return ALIASES.get(name, name)


def synthetic(status: dict, config: dict) -> bool:
    """Whether a run trained on the phantom. status.json says so since finished runs recorded `synthetic`; before,
    and for runs not finished, the configuration's data set tells."""
    return bool(status.get("synthetic", config.get("dataset") == "phantom"))


def labels_from_columns(columns) -> list[str]:
    """A run's labels from its prediction file's `y_prob_<label>` columns: thresholds.json did not list `labels`
    in the earliest versions."""
    return [c[len("y_prob_"):] for c in columns if c.startswith("y_prob_")]


def split_metrics(saved: dict, split: str, score: Callable[[], dict]) -> dict:
    """A split's metrics: metrics.json's entry, or, for a run finished before metrics.json was written (the first
    versions wrote predictions only), `score()` computes them from its predictions (image unit, max over views,
    as those versions scored)."""
    return saved.get(split) or score()


UNSCORED_UNIT, UNSCORED_REDUCE = "image", "max"  # how the versions before metrics.json scored a run


def model_card(saved: dict | None, make: Callable[[], dict]) -> dict:
    """The run's model card: model_card.json, or, for a run finished before model cards were written, `make()`
    builds it from the run's files."""
    return saved or make()


def unit(summary: dict) -> str:
    """The scoring unit of a split's summary: runs scored before study-level scoring have no `unit`; they scored
    images."""
    return summary.get("unit", "image")


def engine(config: dict) -> str:
    """The Keras engine a run trained with: config.yaml has `keras_backend` since JAX and PyTorch were added; the
    runs before trained with TensorFlow."""
    return config.get("keras_backend") or "tensorflow"


MIN_POSITIVES = 10  # the default of min_positives, with which runs made before the key were scored


def recorded_min_positives(config: dict):
    """A run's min_positives as its config.yaml records it; a run made before the key was scored with 10."""
    return config.get("min_positives", MIN_POSITIVES)


def min_positives(configs: list[dict]) -> int:
    """The runs' min_positives: the largest their config.yaml files record; 10 where none records one (runs made
    before the key)."""
    values = [(c or {}).get("min_positives") for c in configs]
    values = [v for v in values if isinstance(v, int) and v > 0]
    return max(values) if values else MIN_POSITIVES


def bootstrap_requested(bootstrap) -> int | None:
    """The resamples a split's confidence intervals asked for: metrics.json's `bootstrap` is a mapping
    (`requested`, `resamples`, ...) since patient resamples were shared; earlier versions wrote the number, and
    before `requested` only `resamples`."""
    if isinstance(bootstrap, dict):
        return bootstrap.get("requested", bootstrap.get("resamples"))
    return bootstrap

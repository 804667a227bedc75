"""A run folder as typed fields: what readers (the report, `evaluate`, `predict`, `export`, the sweep) take from a
run directory, read through one class instead of file names and JSON keys. `Run.open(path)` checks that the folder
is a run; each field is read the first time it is asked for and kept (a `Run` is a snapshot), and predictions,
the costly part, only per split when asked. Writers keep using `benchmark.runs.rundir`'s functions.

Folders written by earlier versions are read through `benchmark.runs.compat`, never by guesses here.
No TensorFlow here, and nothing above `benchmark.runs` is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from benchmark.errors import UserError
from benchmark.runs import compat
from benchmark.runs.ownership import describe, kind_of, read_marker
from benchmark.runs.rundir import (
    CONFIG,
    ENVIRONMENT,
    EXPORT_PERF,
    EXTERNAL,
    FINGERPRINT,
    GALLERY,
    GRADCAM,
    HISTORY,
    IMPORTED,
    IMPORTED_KIND,
    METRICS,
    MODEL,
    MODEL_CARD,
    REQUESTED,
    STATUS,
    THRESHOLDS,
    TIMING,
    predictions_file,
    read_config,
    read_csv,
    read_json,
)

RUN_FILES = (CONFIG, REQUESTED, STATUS)  # a folder holding one of these is read as a run (a run being made included)


@dataclass(frozen=True)
class Status:
    """status.json: `state` is running, done, failed, interrupted or pruned ("missing" without the file)."""

    state: str = "missing"
    error: str | None = None
    pid: int | None = None
    val_auroc: float | None = None
    test_auroc: float | None = None
    synthetic: bool | None = None
    raw: dict = field(default_factory=dict, repr=False)  # every key, as written

    @classmethod
    def from_dict(cls, values: dict) -> "Status":
        values = values if isinstance(values, dict) else {}
        return cls(values.get("status", "missing"), values.get("error"), values.get("pid"), values.get("val_auroc"),
                   values.get("test_auroc"), values.get("synthetic"), dict(values))

    @property
    def done(self) -> bool:
        return self.state == "done"


def is_run_dir(path: Path) -> bool:
    """Whether a folder holds a run's files (its configuration, what a sweep asked of it, or its status)."""
    return any((Path(path) / name).is_file() for name in RUN_FILES)


@dataclass(frozen=True, eq=False)
class Run:
    """One run directory (docs/run-directory.md). Build it with `Run.open(path)` where the folder comes from a
    user; `Run(path)` reads a folder already known to be a run (a sweep's runs/<name>/)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def open(cls, path, hint: str = "pass a run directory (SWEEP/runs/NAME)") -> "Run":
        """The run at `path`; a missing folder, a file, or a folder that is not a run (a sweep, a user's folder) is
        one line naming it and what it is."""
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path} does not exist; {hint}")
        if not path.is_dir():
            raise UserError(f"{path} is a file, not a run directory; {hint}")
        if kind_of(path) not in ("run", IMPORTED_KIND) and not is_run_dir(path) and not (path / IMPORTED).is_file():
            raise UserError(f"{path} is {describe(path)}, not a run directory; {hint}")
        return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    # --- the folder ----------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def marker(self) -> tuple[str, int] | None:
        """(kind, layout) of the folder's marker; None for a folder of a version before markers."""
        return read_marker(self.path)

    @property
    def layout(self) -> int:
        """The layout version the folder was written in (its marker's; an unmarked folder is layout 1)."""
        return self.marker[1] if self.marker else compat.MARKER_LAYOUT

    @property
    def kind(self) -> str | None:
        """`run` or `imported` (the marker's kind, else the compatibility rule's)."""
        return self.marker[0] if self.marker else kind_of(self.path)

    # --- what it trained -----------------------------------------------------------------------------------------

    @cached_property
    def imported(self) -> dict | None:
        """imported.json: where an imported run's predictions came from; None for a trained run."""
        return read_json(self.file(IMPORTED))

    @property
    def is_imported(self) -> bool:
        """Whether the folder holds another model's imported predictions, not a trained run."""
        return self.file(IMPORTED).is_file()

    @property
    def trained(self) -> bool:
        return not self.is_imported

    @cached_property
    def config_values(self) -> dict:
        """The run's configuration as written, keys and values unchecked (config.yaml, else what a sweep asked in
        requested.yaml; an imported run's is in imported.json): what the report shows, old keys included."""
        import yaml

        path = self.file(CONFIG) if self.file(CONFIG).is_file() else self.file(REQUESTED)
        values = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
        return (self.imported.get("config") or {}) if self.imported else values

    @cached_property
    def config(self):
        """config.yaml as a validated `Config` (old key names accepted), None without the file."""
        return read_config(self.path)

    @cached_property
    def requested(self):
        """requested.yaml (what a sweep asked the run to train) as a `Config`, None without the file."""
        return read_config(self.path, REQUESTED)

    @cached_property
    def fingerprint(self) -> dict | None:
        return read_json(self.file(FINGERPRINT))

    @cached_property
    def environment(self) -> dict:
        return read_json(self.file(ENVIRONMENT), {}) or {}

    # --- how it went ---------------------------------------------------------------------------------------------

    @cached_property
    def status(self) -> Status:
        return Status.from_dict(read_json(self.file(STATUS), {}) or {})

    @property
    def synthetic(self) -> bool:
        """Whether it trained (or was scored) on the phantom."""
        return compat.synthetic(self.status.raw, self.config_values)

    @cached_property
    def history(self):
        """history.csv as a DataFrame; None without the file (or an empty one)."""
        path = self.file(HISTORY)
        return read_csv(path) if path.is_file() and path.stat().st_size else None

    @cached_property
    def timing(self) -> dict:
        return read_json(self.file(TIMING), {}) or {}

    @property
    def has_model(self) -> bool:
        return self.file(MODEL).is_file()

    # --- its results ---------------------------------------------------------------------------------------------

    @cached_property
    def thresholds_file(self) -> dict:
        """thresholds.json as written ({} without it): `labels`, `thresholds`, `selected`."""
        return read_json(self.file(THRESHOLDS), {}) or {}

    @property
    def thresholds(self) -> dict | None:
        """Per label, its thresholds by kind (thresholds.json's `thresholds`)."""
        return self.thresholds_file.get("thresholds")

    @cached_property
    def labels(self) -> list[str]:
        """The labels it predicts, in order: thresholds.json's, else the test predictions' columns; [] if neither."""
        if self.thresholds_file.get("labels"):
            return list(self.thresholds_file["labels"])
        path = self.file(predictions_file("test"))
        return compat.labels_from_columns(read_csv(path, nrows=0).columns) if path.is_file() else []

    @cached_property
    def metrics(self) -> dict:
        """metrics.json ({} without it): `val`, `test`, `protocol`, `synthetic`, `test_tta` ..."""
        return read_json(self.file(METRICS), {}) or {}

    def has_predictions(self, split: str) -> bool:
        return self.file(predictions_file(split)).is_file()

    def predictions(self, split: str):
        """predictions_<split>.csv as a DataFrame (read when first asked, then kept); None without the file."""
        cache = self.__dict__.setdefault("_predictions", {})
        if split not in cache:
            path = self.file(predictions_file(split))
            cache[split] = read_csv(path) if path.is_file() else None
        return cache[split]

    @cached_property
    def external(self) -> dict:
        """{name: metrics} of the run scored on other data sets (external/<name>/metrics.json with a test entry)."""
        out = {}
        folder = self.file(EXTERNAL)
        if folder.is_dir():
            for sub in sorted(folder.iterdir()):
                metrics = read_json(sub / METRICS) if sub.is_dir() else None
                if metrics and metrics.get("test"):
                    out[sub.name] = metrics
        return out

    @cached_property
    def gallery(self) -> list[dict]:
        """The Grad-CAM entries of gradcam/gallery.json whose file is a plain name inside the run's gradcam/ folder
        (not an absolute path or one that climbs out, whatever gallery.json says)."""
        entries = read_json(self.file(GALLERY)) or []
        out = []
        for e in entries if isinstance(entries, list) else []:
            name = str(e.get("file", "")) if isinstance(e, dict) else ""
            if not name or Path(name).name != name or name.startswith(".") or "\\" in name:
                continue
            if (self.path / GRADCAM / name).is_file():
                out.append(e)
        return out

    @cached_property
    def model_card(self) -> dict | None:
        """model_card.json as written; None without it (compat.model_card makes one for runs before cards)."""
        return read_json(self.file(MODEL_CARD))

    @cached_property
    def export_perf(self) -> dict:
        """export/perf.json (`perf export`'s latencies), {} without it."""
        return read_json(self.file(EXPORT_PERF)) or {}

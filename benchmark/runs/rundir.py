"""The run directory: the only interface between training and reporting. Its file names are the constants below
(docs/run-directory.md lists what each holds); writes are atomic, so an interrupted run never leaves a half-written
file that looks finished. No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark.errors import UserError

# --- every folder cxr-bench makes (benchmark.runs.ownership)
MARKER = ".cxr-bench"  # a folder cxr-bench made; its text says what kind, and the layout version
LOCK = ".lock"  # the flock of the command working in the folder

# --- a run directory
CONFIG = "config.yaml"  # the resolved configuration the run trained with (the only configuration file)
REQUESTED = "requested.yaml"  # what a sweep asked the run to train (the child's --config)
FINGERPRINT = "fingerprint.json"  # what decides the results: the configuration's keys and the data's hashes
RETRAIN = "retrain.json"  # written by `retrain`: the overrides it applied and where the previous run was kept
STATUS = "status.json"  # {"status": running | done | failed | interrupted, ...}
ENVIRONMENT = "environment.json"
HISTORY = "history.csv"
MODEL = "model.keras"
THRESHOLDS = "thresholds.json"
TIMING = "timing.json"
METRICS = "metrics.json"
TRAIN_LOG = "train.log"
PROGRESS = "progress.json"  # the child's last finished epoch, read by the sweep for its progress lines
IMPORTED = "imported.json"  # in an imported run's folder (import-predictions): where its predictions came from
IMPORTED_KIND = "imported"  # an imported run's folder marker kind
GRADCAM = "gradcam"
GALLERY = "gradcam/gallery.json"
CHECKPOINT = "checkpoint"  # the resume state; removed when the run is done (unless keep_checkpoint)
STATE = "checkpoint/state.json"  # the commit point of an epoch: names the epoch's model and the best weights
TENSORBOARD = "tensorboard"
EXTERNAL = "external"  # external/<name>/predictions.csv and metrics.json: the run scored on another data set
EXTERNAL_PREDICTIONS = "predictions.csv"
EXPORT_PERF = "export/perf.json"  # `perf export`'s latencies (benchmark.evaluation.export writes export/)
MODEL_CARD = "model_card.json"  # the model card (benchmark.evaluation.model_card writes it)

# --- a sweep folder
SWEEP_CONFIG = "sweep.yaml"
SWEEP_FINGERPRINT = "fingerprint.json"
SWEEP_STATUS = "sweep_status.json"
RUNS = "runs"
REPORT = "report"


def predictions_file(split: str) -> str:
    """predictions_val.csv, predictions_test.csv, predictions_test_tta.csv ..."""
    return f"predictions_{split}.csv"


def checkpoint_file(epoch: int) -> str:
    """The model (with its optimiser) saved after `epoch` epochs, for resuming: checkpoint/epoch-0003.keras."""
    return f"{CHECKPOINT}/epoch-{epoch:04d}.keras"


def best_file(epoch: int) -> str:
    """The weights of the best epoch so far (no optimiser): checkpoint/best-0002.weights.h5."""
    return f"{CHECKPOINT}/best-{epoch:04d}.weights.h5"


def fsync_folder(folder) -> None:
    """Make a rename in `folder` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


FILE_MODE = 0o666 & ~_umask()  # what open() would give (mkstemp's files are private)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush and fsync it, rename it over `path`, fsync the
    folder; a failed write removes the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_text(obj) -> str:
    return json.dumps(obj, indent=1, default=_jsonable) + "\n"


def write_json(path, obj) -> None:
    atomic_write_text(path, json_text(obj))


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def read_json(path, default=None):
    """A JSON file's content, `default` if it does not exist; a corrupt one is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is corrupt ({type(exc).__name__}: {str(exc)[:80]}); delete it, or the run "
                        f"folder, and run again") from None


def write_csv(path, frame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def read_csv(path, **kwargs):
    """A CSV file of a run (history, predictions) as a DataFrame; a damaged one (cut short, not text, rows of the
    wrong width) is a UserError naming it."""
    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:80]
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {first}); restore it, or train the run again "
                        f"(evaluate --run {Path(path).parent} rewrites its predictions)") from None


@contextlib.contextmanager
def _without_optimizer(model):
    """Keras 3 saves the optimiser's variables with the model and its weights (a ResNet34: 245 against 85 MB);
    detached here, they are not written."""
    optimizer = getattr(model, "optimizer", None)
    model.optimizer = None
    try:
        yield model
    finally:
        model.optimizer = optimizer


def _atomic_keras(path, save, suffix: str) -> None:
    """Write with Keras's `save` to a temporary file beside `path` (its name keeps Keras's suffix), make it
    durable, rename it over `path`; a failed save removes the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:-len(suffix)]}.tmp{os.getpid()}{suffix}")
    try:
        save(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_save_model(model, path, optimizer: bool = False) -> None:
    """model.save atomically; without the optimiser's state unless `optimizer` (resume checkpoints)."""
    if optimizer:
        _atomic_keras(path, model.save, ".keras")
    else:
        with _without_optimizer(model):
            _atomic_keras(path, model.save, ".keras")


def atomic_save_weights(model, path) -> None:
    """model.save_weights atomically, without the optimiser's state."""
    with _without_optimizer(model):
        _atomic_keras(path, model.save_weights, ".weights.h5")


def read_status(run_dir) -> dict:
    return read_json(Path(run_dir) / STATUS, {}) or {}


def write_status(run_dir, status: str, **extra) -> None:
    write_json(Path(run_dir) / STATUS, {"status": status, **extra})


def read_config(run_dir, name: str = CONFIG):
    """The run's configuration as a validated Config (None if the file is absent)."""
    import yaml

    from benchmark.config import config_from_dict

    path = Path(run_dir) / name
    if not path.is_file():
        return None
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is corrupt (not valid YAML: {str(exc).splitlines()[0]}); delete it and run "
                        f"again") from None
    return config_from_dict(values, str(path))


def write_config(run_dir, cfg, name: str = CONFIG) -> None:
    from benchmark.config import dump_yaml

    atomic_write_text(Path(run_dir) / name, dump_yaml(cfg))


@dataclass
class RunState:
    """Training progress, saved with each epoch's checkpoint (``checkpoint/state.json``)."""

    epochs_done: int = 0
    checkpoint: str | None = None  # the model (with its optimiser) after the last finished epoch, in the run folder
    best: float = -1.0  # best validation mean AUROC so far
    best_epoch: int | None = None
    best_weights: str | None = None  # the best epoch's weights, in the run folder
    stopped_early: bool = False
    phase: int = 0  # index of the fine-tuning phase the last epoch belonged to
    train_seconds: float = 0.0
    epoch_seconds: list = field(default_factory=list)
    callbacks: dict = field(default_factory=dict)  # the stoppers' counters, by class name
    rng: list = field(default_factory=list)  # the random layers' seed-generator states (a saved model has none)
    nan: str | None = None  # why the loss stopped being finite (not saved: the run fails)

    @classmethod
    def load(cls, path: Path) -> "RunState":
        saved = read_json(path, {}) or {}
        known = {k: v for k, v in saved.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, path: Path) -> None:
        write_json(path, {k: v for k, v in asdict(self).items() if k != "nan"})


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def is_imported(run_dir) -> bool:
    """Whether a run folder holds another model's imported predictions (benchmark.sweep.imported), not a trained run."""
    return (Path(run_dir) / IMPORTED).is_file()

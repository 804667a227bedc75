"""The run directory: the only interface between training and reporting. Its file names are the constants below
(docs/run-directory.md lists what each holds); writes are atomic, so an interrupted run never leaves a half-written
file that looks finished. No TensorFlow here.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

# --- a run directory
CONFIG = "config.yaml"  # the resolved configuration the run trained with (the only configuration file)
REQUESTED = "requested.yaml"  # what a sweep asked the run to train (the child's --config)
STATUS = "status.json"  # {"status": running | done | failed | interrupted, ...}
ENVIRONMENT = "environment.json"
HISTORY = "history.csv"
MODEL = "model.keras"
THRESHOLDS = "thresholds.json"
TIMING = "timing.json"
METRICS = "metrics.json"
TRAIN_LOG = "train.log"
GRADCAM = "gradcam"
GALLERY = "gradcam/gallery.json"
CHECKPOINT = "checkpoint"
LAST = "checkpoint/last.keras"
BEST = "checkpoint/best.weights.h5"
STATE = "checkpoint/state.json"
TENSORBOARD = "tensorboard"

# --- a sweep folder
SWEEP_CONFIG = "sweep.yaml"
SWEEP_STATUS = "sweep_status.json"
RUNS = "runs"
REPORT = "report"


def predictions_file(split: str) -> str:
    """predictions_val.csv, predictions_test.csv, predictions_test_tta.csv ..."""
    return f"predictions_{split}.csv"


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=_jsonable) + "\n")


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def read_json(path, default=None):
    path = Path(path)
    if not path.is_file():
        return default
    return json.loads(path.read_text())


def write_csv(path, frame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def _atomic_keras(path, save, tmp_name: str) -> None:
    """Write with Keras's `save` to a temporary file beside `path` (its name keeps Keras's suffix), then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(tmp_name)
    save(tmp)
    os.replace(tmp, path)


def atomic_save_model(model, path) -> None:
    """model.save to a temporary .keras file, then rename over `path`."""
    _atomic_keras(path, model.save, f".{Path(path).stem}.tmp{os.getpid()}.keras")


def atomic_save_weights(model, path) -> None:
    """model.save_weights to a temporary .weights.h5 file, then rename over `path`."""
    _atomic_keras(path, model.save_weights, f".tmp{os.getpid()}.{Path(path).name}")


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
    return config_from_dict(yaml.safe_load(path.read_text()) or {}, str(path))


def write_config(run_dir, cfg, name: str = CONFIG) -> None:
    from benchmark.config import dump_yaml

    atomic_write_text(Path(run_dir) / name, dump_yaml(cfg))


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Versions and devices for environment.json (no host name)."""
    import keras
    import numpy as np
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for g in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
        except (ValueError, RuntimeError):
            names.append(g.name)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "cuda": info.get("cuda_version"),
        "cudnn": info.get("cudnn_version"),
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "gpus": names,
        "git_commit": git_commit(),
    }

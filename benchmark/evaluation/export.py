"""`python -m benchmark export`: a trained run's model in a deployment format, with its parity proven.

The exported model is the run's `model.keras` as it is: uint8 grayscale images (batch, S, S, 1) in (resizing to S
is the caller's; casting, normalisation and the backbone's preprocessing are inside), one probability per label out.
Formats, each through Keras's own `model.export`: `savedmodel` (TensorFlow SavedModel, served by
`tf.saved_model.load(...).serve`), `onnx` (tf2onnx, run here by ONNX Runtime) and `litert` (TensorFlow's LiteRT
converter, run here by ai-edge-litert's interpreter).

An export is declared done only after its probabilities on the run's test images (up to `CHECK_IMAGES` of them)
equal the Keras model's within `TOLERANCE` (float32); otherwise it is removed and refused with the largest
difference named. `RUN/export/exports.json` records each export (file, bytes, largest difference, images checked,
versions); `perf export` adds latency and size (benchmark.perf.export).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from benchmark.errors import UserError

TOLERANCE = 1e-4
CHECK_IMAGES = 256  # the run's first test images: enough to show parity, cheap on a big test set
EXPORT = "export"  # RUN/export/: the exports of a run, and exports.json
EXPORTS = "exports.json"
FORMATS = {  # name: (Keras's format, default file name, the packages it needs beyond TensorFlow)
    "savedmodel": ("tf_saved_model", "model.savedmodel", ()),
    "onnx": ("onnx", "model.onnx", ("tf2onnx", "onnxruntime")),
    "litert": ("litert", "model.tflite", ("ai_edge_litert",)),
}
PIP_NAMES = {"tf2onnx": "tf2onnx", "onnxruntime": "onnxruntime", "ai_edge_litert": "ai-edge-litert"}


def check_packages(fmt: str) -> None:
    """A missing converter or runtime is one line naming it, with the pip command (before anything is loaded)."""
    import importlib.util

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    missing = [m for m in FORMATS[fmt][2] if importlib.util.find_spec(m) is None]
    if missing:
        names = " ".join(PIP_NAMES[m] for m in missing)
        raise UserError(f"--format {fmt} needs {names}, which is not installed: pip install {names} "
                        f"(or pip install -e .[export])")


def test_images(run: Path, cfg, limit: int = CHECK_IMAGES) -> np.ndarray:
    """The run's first `limit` test images as the model takes them: uint8 (n, S, S, 1), from the image cache."""
    from benchmark.input.prepare import prepare

    data = prepare(cfg)
    rows = data.splits["test"].rows[:limit]
    return np.asarray(data.cache.images[rows], dtype=np.uint8).reshape(len(rows), cfg.image_size, cfg.image_size, 1)


def _target(run: Path, fmt: str, out) -> Path:
    """Where the export goes: --out, or RUN/export/<default name>. An existing --out is never replaced (only an
    earlier export inside RUN/export/ is)."""
    default = run / EXPORT / FORMATS[fmt][1]
    target = Path(out) if out else default
    if target.exists() and target.resolve() != default.resolve():
        raise UserError(f"{target} exists; choose another --out (an export never replaces a file it did not make)")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class Runner:
    """Probabilities from an exported model, for the parity check and for timing."""

    def __init__(self, fmt: str, path: Path):
        self.fmt, self.path = fmt, Path(path)
        if fmt == "savedmodel":
            import tensorflow as tf

            self.loaded = tf.saved_model.load(str(path))  # kept: its variables die with it
            self.fn = self.loaded.serve
        elif fmt == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name
        else:
            from ai_edge_litert.interpreter import Interpreter

            self.interpreter = Interpreter(model_path=str(path))
            self.batch = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.fmt == "savedmodel":
            return np.asarray(self.fn(x))
        if self.fmt == "onnx":
            return self.session.run(None, {self.input: x})[0]
        it = self.interpreter
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        if self.batch != len(x):
            it.resize_tensor_input(inp["index"], list(x.shape))
            it.allocate_tensors()
            self.batch = len(x)
            inp, out = it.get_input_details()[0], it.get_output_details()[0]
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        return it.get_tensor(out["index"]).copy()


def predict_batches(fn, images: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([np.asarray(fn(images[i:i + batch]), dtype=np.float32)
                           for i in range(0, len(images), batch)])


def size_bytes(path: Path) -> int:
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def inference_model(model):
    """The run's network without its augmentation: Keras's random preprocessing layers augment unless told
    `training=False`, which an exported graph's callers never say (and ONNX has no op for them). The other layers
    are the trained ones, shared, in the same order (the classifier is one chain: models/classifier.py)."""
    import keras

    inp = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="image")
    x = inp
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name == "augment":
            continue
        x = layer(x, training=False)
    return keras.Model(inp, x, name=f"{model.name}_inference")


def export_run(run, fmt: str, out=None, log=print) -> dict:
    """Export RUN's model as `fmt`, check its parity on the run's test images, record it; returns the record."""
    import keras

    from benchmark.evaluation.evaluate import _load_run
    from benchmark.evaluation.inference import load_model
    from benchmark.evaluation.model_card import write_model_card
    from benchmark.runs.ownership import FolderLock
    from benchmark.runs.rundir import read_json, write_json

    check_packages(fmt)
    run, cfg, thresholds = _load_run(run)
    if keras.backend.backend() != "tensorflow":
        raise UserError(f"export runs on Keras's TensorFlow engine (this process has {keras.backend.backend()}); "
                        f"unset KERAS_BACKEND")
    labels = list((thresholds or {}).get("labels") or [])
    model = load_model(run, len(labels)) if labels else load_model(run, _outputs(run))
    images = test_images(run, cfg)
    target = _target(run, fmt, out)
    tmp = target.with_name(f".tmp-{target.name}")  # Keras wants the format's suffix
    _remove(tmp)
    expected = predict_batches(lambda x: model.predict(x, verbose=0), images)  # the run's own model
    exported = inference_model(model)
    exported(images[:1])  # Keras's ONNX export wants a model that has been called
    t0 = time.perf_counter()
    try:
        exported.export(str(tmp), format=FORMATS[fmt][0], verbose=False)
    except ImportError as exc:  # a converter the format needs, found missing only now
        _remove(tmp)
        raise UserError(f"--format {fmt}: {exc}; pip install -e .[export]") from None
    seconds = time.perf_counter() - t0
    try:
        got = predict_batches(Runner(fmt, tmp), images)
    except BaseException:
        _remove(tmp)
        raise
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else (0, 0)
    largest = float(diff.max()) if diff.size else 0.0
    if got.shape != expected.shape or not largest <= TOLERANCE:
        _remove(tmp)
        where = f"label {labels[worst[1]] if labels else worst[1]}, test image {worst[0]}"
        raise UserError(f"the {fmt} export of {run} differs from the Keras model by {largest:.3g} ({where}), more "
                        f"than {TOLERANCE:g}; it was not written")
    _remove(target)
    tmp.rename(target)
    record = {"format": fmt, "file": str(target), "bytes": size_bytes(target), "export_seconds": seconds,
              "max_abs_diff": largest, "tolerance": TOLERANCE, "checked_images": int(len(images)),
              "input": f"uint8 (batch, {cfg.image_size}, {cfg.image_size}, 1)", "output": labels,
              "versions": _versions(fmt)}
    with FolderLock(run, "command (train, evaluate, export or a sweep)"):
        exports = read_json(run / EXPORT / EXPORTS, {}) or {}
        exports[fmt] = record
        write_json(run / EXPORT / EXPORTS, exports)
        write_model_card(run, finishing=True)  # its speed section lists the exports
    log(f"{fmt}: {target} ({record['bytes'] / 1e6:.1f} MB), largest difference from Keras {largest:.2g} on "
        f"{len(images)} test images")
    return record


def _outputs(run: Path) -> int:
    import pandas as pd

    from benchmark.runs.rundir import predictions_file

    return sum(c.startswith("y_prob_") for c in pd.read_csv(run / predictions_file("test"), nrows=0).columns)


def _versions(fmt: str) -> dict:
    import importlib.metadata as md

    names = {"tensorflow", "keras", *(PIP_NAMES[m] for m in FORMATS[fmt][2])}
    out = {}
    for name in sorted(names):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def exports_of(run) -> dict:
    from benchmark.runs.rundir import read_json

    return read_json(Path(run) / EXPORT / EXPORTS, {}) or {}


def format_record(record: dict) -> str:
    return json.dumps(record, indent=1)

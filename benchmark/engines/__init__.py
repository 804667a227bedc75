"""Keras's engines: TensorFlow (the default and the reference), JAX and PyTorch, each behind one interface
(`Engine` in base.py: set-up and strategy, accelerator, determinism, jit choice, the gradient Grad-CAM takes, the
versions environment.json records), one module per engine, listed in `ENGINES` and imported when used. A training
or inference command chooses one with `activate` before Keras is imported; on JAX and PyTorch, TensorFlow is never
imported (see benchmark/input/batches.py for their input path)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from benchmark.errors import UserError

EXTRAS = {"tensorflow": "pip install -e .", "jax": "pip install -e .[jax]", "torch": "pip install -e .[torch]"}
ENGINES = {"tensorflow": "benchmark.engines.tf_engine:TensorFlowEngine", "jax": "benchmark.engines.jax_engine:JaxEngine",
           "torch": "benchmark.engines.torch_engine:TorchEngine"}


def current():
    """The `Engine` of the Keras backend this process runs on."""
    import importlib

    import keras

    module, _, cls = ENGINES[keras.backend.backend()].partition(":")
    return getattr(importlib.import_module(module), cls)()


def activate(name: str | None) -> str:
    """Make `name` (or $KERAS_BACKEND, else tensorflow) the Keras backend of this process; a missing engine, or
    Keras already running on another, is a UserError that says what to do."""
    name = name or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if name not in EXTRAS:
        raise UserError(f"keras_backend must be one of {', '.join(EXTRAS)}, got {name!r}")
    if "keras" in sys.modules:
        import keras

        current = keras.backend.backend()
        if current != name:
            raise UserError(f"Keras already runs on {current} in this process; start a new one with "
                            f"KERAS_BACKEND={name}")
        return name
    if importlib.util.find_spec(name) is None:
        raise UserError(f"keras_backend {name} needs {name}, which is not installed: {EXTRAS[name]}")
    os.environ["KERAS_BACKEND"] = name
    if name != "tensorflow":
        _keep_tensorflow_out()
    return name


def _keep_tensorflow_out() -> None:
    """Keras probes for TensorFlow wherever it is installed (`tf.available`: when it saves a model, when it sets
    the random seed) and imports it to do so. On the JAX and PyTorch backends nothing here uses TensorFlow, so
    Keras is told it is absent: it is then neither imported nor needed."""
    import keras  # noqa: F401  (on the backend chosen above)
    from keras.src.utils import module_utils

    if module_utils.tensorflow.module is None:
        module_utils.tensorflow._available = False


def activate_for_run(run) -> str:
    """The engine for scoring a run: $KERAS_BACKEND if set, else the one the run was trained on."""
    if os.environ.get("KERAS_BACKEND"):
        return activate(None)
    from benchmark.runs.rundir import read_config

    cfg = read_config(Path(run))
    return activate(getattr(cfg, "keras_backend", None) if cfg else None)

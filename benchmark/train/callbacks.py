"""The training callbacks, each a module-level class configured through `__init__` (in the style of Keras's own).
They share the run's `RunState` (benchmark.runs.rundir), the progress a checkpoint records so that a run resumes where
it stopped.

One callback per concern. Order matters: `EpochTimer`, `BatchNormReestimate`, `ValidationScore` and
`LearningRateLog` run first each epoch (they put ``epoch_seconds``, ``val_auroc`` and ``learning_rate`` into the
logs that EarlyStopping, ReduceLROnPlateau, CSVLogger and `Progress` read); `Checkpoint` runs last (it saves the
epoch once everything else has seen it).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from benchmark.runs.rundir import (
    CHECKPOINT,
    PROGRESS,
    STATE,
    RunState,
    atomic_save_model,
    atomic_save_weights,
    best_file,
    checkpoint_file,
    write_json,
)

STOPPER_KEYS = ("wait", "best", "cooldown_counter", "stopped_epoch", "best_epoch")


def reestimate_bn(model, images, rows, batch_size: int, batches: int, seed: int = 0) -> int:
    """Set every trainable BatchNormalization layer's moving statistics to the mean of its batch statistics over
    `batches` training batches ("precise BN"). Short runs from scratch otherwise predict from statistics that lag
    behind the weights, and every image gets the same output. Returns the number of batches used."""
    from benchmark.engines import current
    from benchmark.input.batches import image_batches

    backbone = model.get_layer("backbone")
    if not batches or not backbone.trainable:
        return 0
    bns = [layer for layer in backbone._flatten_layers(include_self=False, recursive=True)
           if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not bns:
        return 0
    saved = [layer.momentum for layer in bns]
    to_float, preprocess = model.get_layer("to_float"), model.get_layer("preprocess")
    dummy = np.zeros((len(rows), 1), np.float32)
    used = 0
    try:
        batches_in = current().batches(images, rows, dummy, batch_size, shuffle=True, seed=seed,
                                       drop_remainder=len(rows) >= batch_size)
        for i, x in enumerate(image_batches(batches_in, batches), 1):
            for layer in bns:
                layer.momentum = 1.0 - 1.0 / i  # the running mean of the batch statistics seen so far
            backbone(preprocess(to_float(x)), training=True)
            used = i
    finally:
        for layer, m in zip(bns, saved):
            layer.momentum = m
    return used


def mean_auroc(truth: np.ndarray, probs: np.ndarray) -> float:
    """Mean over labels of the AUROC where it is defined (NaN if nowhere)."""
    from benchmark.evaluation.metrics import auroc

    values = [auroc(truth[:, j], probs[:, j]) for j in range(truth.shape[1])]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


class EpochTimer(keras.callbacks.Callback):
    """First callback: the epoch's seconds (training only, before validation) into the logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["epoch_seconds"] = time.perf_counter() - self.t0


class BatchNormReestimate(keras.callbacks.Callback):
    """Before validation: BatchNorm statistics re-estimated on `batches` training batches (see `reestimate_bn`)."""

    def __init__(self, images, train_rows, batch_size: int, batches: int, seed: int, state: RunState):
        super().__init__()
        self.images, self.train_rows, self.batch_size, self.batches = images, train_rows, batch_size, batches
        self.seed, self.state = seed, state

    def on_epoch_end(self, epoch, logs=None):
        if not self.state.nan:  # the weights are gone; nothing to re-estimate
            reestimate_bn(self.model, self.images, self.train_rows, self.batch_size, self.batches, self.seed + epoch)


class ValidationScore(keras.callbacks.Callback):
    """The validation mean AUROC (masked, per label, averaged) into the logs as ``val_auroc``, which the stoppers,
    CSVLogger and the checkpoint read; non-finite predictions stop the run (a finite loss can hide them)."""

    def __init__(self, images, val_rows, val_truth, batch_size: int, state: RunState):
        super().__init__()
        self.images, self.val_rows, self.val_truth, self.batch_size, self.state = (images, val_rows, val_truth,
                                                                                  batch_size, state)

    def on_epoch_end(self, epoch, logs=None):
        from benchmark.evaluation.inference import predict_probs

        if self.state.nan:  # the weights are gone; nothing to validate
            logs["val_auroc"] = 0.0
            return
        probs = predict_probs(self.model, self.images, self.val_rows, self.batch_size)
        if not np.isfinite(probs).all():  # float16 overflow in the backbone
            self.state.nan = (f"the validation predictions became NaN or infinite in epoch {epoch + 1} although "
                              f"the loss was finite (float16 overflow?)")
            self.model.stop_training = True
            logs["val_auroc"] = 0.0
            return
        score = mean_auroc(self.val_truth, probs)
        logs["val_auroc"] = score if not math.isnan(score) else 0.0


class LearningRateLog(keras.callbacks.Callback):
    """The epoch's learning rate into the logs, before ReduceLROnPlateau lowers it (as history.csv records it)."""

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(lr.numpy() if hasattr(lr, "numpy") else lr)


class Progress(keras.callbacks.Callback):
    """The last finished epoch in RUN/progress.json (atomically), where a sweep reads its progress lines: the
    sweep never parses what Keras prints."""

    def __init__(self, run_dir: Path, epochs: int):
        super().__init__()
        self.path, self.epochs = Path(run_dir) / PROGRESS, epochs

    def on_epoch_end(self, epoch, logs=None):
        values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float, np.floating))}
        write_json(self.path, {"epoch": epoch + 1, "epochs": self.epochs, **values})


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is not finite, and records why in the run state."""

    def __init__(self, state: RunState):
        super().__init__()
        self.state = state

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.state.nan = f"the loss became {loss} at batch {batch}"
            self.model.stop_training = True


class Checkpoint(keras.callbacks.Callback):
    """Last callback: restores the stoppers' counters on resume. After every finished epoch it saves the model
    with its optimiser (checkpoint/epoch-NNNN.keras) and, when validation improved, the weights
    (checkpoint/best-NNNN.weights.h5), each atomically under a name of its own; then the run state, which names
    them, is written: that one write is the epoch's commit point, so a kill before it resumes from the previous
    epoch and a kill after it from this one, never replaying or skipping an epoch. Files the state no longer names
    are removed after it."""

    def __init__(self, run_dir: Path, state: RunState, stoppers: list):
        super().__init__()
        self.run_dir, self.state, self.stoppers = Path(run_dir), state, stoppers

    def on_train_begin(self, logs=None):
        for cb in self.stoppers:
            for k, v in self.state.callbacks.get(type(cb).__name__, {}).items():
                setattr(cb, k, v)

    def on_epoch_end(self, epoch, logs=None):
        state = self.state
        if state.nan:
            return
        score = logs.get("val_auroc", 0.0)
        if score > state.best:  # weights only: model.keras is written once, at the end
            state.best_weights = best_file(epoch + 1)
            atomic_save_weights(self.model, self.run_dir / state.best_weights)
            state.best = float(score)
            state.best_epoch = epoch + 1
        state.checkpoint = checkpoint_file(epoch + 1)
        atomic_save_model(self.model, self.run_dir / state.checkpoint, optimizer=True)
        state.epochs_done = epoch + 1
        if self.model.stop_training:
            state.stopped_early = True
        state.train_seconds += logs.get("epoch_seconds", 0.0)
        state.epoch_seconds.append(logs.get("epoch_seconds", 0.0))
        state.callbacks = {type(cb).__name__: {k: _plain(getattr(cb, k)) for k in STOPPER_KEYS if hasattr(cb, k)}
                           for cb in self.stoppers}
        state.rng = rng_state(self.model)
        state.save(self.run_dir / STATE)  # the commit point
        keep = {state.checkpoint, state.best_weights}
        for path in (self.run_dir / CHECKPOINT).glob("*"):
            if f"{CHECKPOINT}/{path.name}" not in keep and (path.name.startswith(("epoch-", "best-"))):
                path.unlink(missing_ok=True)


def _seed_states(model) -> list:
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def rng_state(model) -> list:
    """The states of the model's seed generators (dropout, augmentation), in the model's layer order. Keras does
    not restore them when it loads a model, so a resumed run would draw other dropout masks than an uninterrupted
    one. (In layer order, not by variable path: a seed generator's path is numbered per process.)"""
    return [keras.ops.convert_to_numpy(v.value).tolist() for v in _seed_states(model)]


def restore_rng_state(model, saved: list) -> None:
    """Put back the seed-generator states that `rng_state` recorded (nothing if the model has other ones)."""
    states = _seed_states(model)
    if saved and len(saved) == len(states):
        for v, value in zip(states, saved):
            v.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(v.dtype)))


def _plain(value):
    return value.item() if hasattr(value, "item") else value

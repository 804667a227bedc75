"""Training one backbone into a run directory, resumable after any interruption (kill -9 included).

Each finished epoch saves the whole model with its optimiser (``checkpoint/last.keras``) and the state of the
callbacks (``checkpoint/state.json``); the weights of the best epoch on validation mean AUROC are kept in
``checkpoint/best.weights.h5`` and become ``model.keras`` when training ends. Re-running the
same command continues after the last finished epoch; a finished run (status.json says done) is not retrained.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.config import Config, config_from_dict, dump_yaml
from benchmark.errors import UserError
from benchmark.rundir import (atomic_save_model, atomic_save_weights, atomic_write_text, environment, read_json,
                              read_status, write_csv, write_json, write_status)

BEST_WEIGHTS = "best.weights.h5"


class TrainingFailed(UserError):
    """The run could not finish (NaN loss, ...): recorded in status.json, one-line message, exit code 2."""


def setup_runtime(cfg: Config):
    """Seeds, determinism, precision, devices; returns the distribution strategy (or None)."""
    import keras
    import tensorflow as tf

    if cfg.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cfg.logical_cpus)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    for g in gpus:
        try:
            tf.config.experimental.set_memory_growth(g, True)
        except (ValueError, RuntimeError):
            pass
    precision = cfg.precision
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    keras.mixed_precision.set_global_policy(precision)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if cfg.logical_cpus > 1:
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    return None


def _phases(cfg: Config) -> list[tuple[int, int, bool, float]]:
    """(first epoch, end epoch, backbone trainable, learning rate) for each fine-tuning phase."""
    if cfg.finetune == "baseline":
        return []
    if cfg.finetune == "linear":
        return [(0, cfg.epochs, False, cfg.learning_rate)]
    if cfg.finetune == "gradual":
        g = min(cfg.gradual_epochs, cfg.epochs)
        return [(0, g, False, cfg.learning_rate), (g, cfg.epochs, True, cfg.learning_rate * cfg.gradual_lr_factor)]
    return [(0, cfg.epochs, True, cfg.learning_rate)]


def _optimizer(cfg: Config, lr: float, steps_per_epoch: int, epochs: int):
    import keras

    rate = lr
    if cfg.schedule == "cosine":
        warmup = cfg.warmup_epochs * steps_per_epoch
        total = max(1, epochs * steps_per_epoch - warmup)
        rate = keras.optimizers.schedules.CosineDecay(lr * (0.1 if warmup else 1.0), total, alpha=0.01,
                                                      warmup_target=lr if warmup else None, warmup_steps=warmup)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(rate)


def _compile(model, cfg: Config, lr: float, steps: int, epochs: int, train_targets):
    from benchmark.losses import make_loss

    model.compile(optimizer=_optimizer(cfg, lr, steps, epochs), loss=make_loss(cfg.loss, train_targets, cfg.focal_gamma),
                  jit_compile=bool(cfg.xla))


def predict_probs(model, images, rows, batch_size: int, tta: bool = False) -> np.ndarray:
    """Probabilities for cache rows, in order; with `tta`, the mean over TenCrop views."""
    from benchmark.pipeline import make_dataset, ten_crop

    n = len(rows)
    if n == 0:
        return np.zeros((0, model.output_shape[-1]))
    # full batches only (the last one padded, then trimmed): a replica must never get an empty batch
    padded = np.concatenate([rows, np.repeat(rows[-1:], (-n) % batch_size)])
    ds = make_dataset(images, padded, np.zeros((len(padded), 1), np.float32), batch_size)
    if not tta:
        return model.predict(ds.map(lambda x, y: x), verbose=0)[:n].astype(np.float64)
    out = []
    for x, _ in ds:
        crops = ten_crop(x)
        out.append(np.mean([model(c, training=False).numpy() for c in crops], axis=0))
    return np.concatenate(out)[:n].astype(np.float64)


def reestimate_bn(model, images, rows, batch_size: int, batches: int, seed: int = 0) -> int:
    """Set every trainable BatchNormalization layer's moving statistics to the mean of its batch statistics over
    `batches` training batches ("precise BN"). Short runs from scratch otherwise predict from statistics that lag
    behind the weights, and every image gets the same output. Returns the number of batches used."""
    import keras

    from benchmark.pipeline import make_dataset

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
        for i, (x, _) in enumerate(make_dataset(images, rows, dummy, batch_size, shuffle=True, seed=seed,
                                                drop_remainder=len(rows) >= batch_size).take(batches), 1):
            for layer in bns:
                layer.momentum = 1.0 - 1.0 / i  # the running mean of the batch statistics seen so far
            backbone(preprocess(to_float(x)), training=True)
            used = i
    finally:
        for layer, m in zip(bns, saved):
            layer.momentum = m
    return used


def mean_auroc(truth: np.ndarray, probs: np.ndarray) -> float:
    from reports.metrics import auroc

    values = [auroc(truth[:, j], probs[:, j]) for j in range(truth.shape[1])]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _callbacks(cfg, run_dir: Path, val, train, images, state: dict, last_phase: bool):
    import keras

    class EpochEnd(keras.callbacks.Callback):
        """First callback each epoch: BatchNorm statistics re-estimated, then validation AUROC (masked, per label,
        averaged), learning rate and timing into the logs, where EarlyStopping, ReduceLROnPlateau, the checkpoints and CSVLogger read them."""

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs["epoch_seconds"] = time.perf_counter() - self.t0
            if state.get("nan"):  # the weights are gone; nothing to validate
                logs["val_auroc"] = 0.0
                return
            reestimate_bn(self.model, images, train.rows, cfg.batch_size, cfg.bn_reestimate_batches, cfg.seed + epoch)
            probs = predict_probs(self.model, images, val.rows, cfg.batch_size)
            score = mean_auroc(val.truth, probs)
            logs["val_auroc"] = score if not math.isnan(score) else 0.0
            lr = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(lr.numpy() if hasattr(lr, "numpy") else lr)

    class NaNGuard(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(loss):
                state["nan"] = f"the loss became {loss} at batch {batch}"
                self.model.stop_training = True

    class BestAndResume(keras.callbacks.Callback):
        """Last callback: restores the callbacks' state on resume, saves the best model, the latest checkpoint
        (model + optimiser) and the state, each atomically, after every finished epoch."""

        def __init__(self, stoppers):
            super().__init__()
            self.stoppers = stoppers

        def on_train_begin(self, logs=None):
            for cb in self.stoppers:
                saved = state.get("callbacks", {}).get(type(cb).__name__)
                if saved:
                    for k, v in saved.items():
                        setattr(cb, k, v)

        def on_epoch_end(self, epoch, logs=None):
            if state.get("nan"):
                return
            score = logs.get("val_auroc", 0.0)
            if score > state.get("best", -1.0):  # weights only: model.keras is written once, at the end
                atomic_save_weights(self.model, run_dir / "checkpoint" / BEST_WEIGHTS)
                state["best"] = score
                state["best_epoch"] = epoch + 1
            state["epochs_done"] = epoch + 1
            if self.model.stop_training:
                state["stopped_early"] = True
            state["train_seconds"] = state.get("train_seconds", 0.0) + logs.get("epoch_seconds", 0.0)
            state.setdefault("epoch_seconds", []).append(logs.get("epoch_seconds", 0.0))
            keys = ("wait", "best", "cooldown_counter", "stopped_epoch", "best_epoch")
            state["callbacks"] = {type(cb).__name__: {k: getattr(cb, k) for k in keys if hasattr(cb, k)}
                                  for cb in self.stoppers}  # numpy scalars: write_json makes them plain
            atomic_save_model(self.model, run_dir / "checkpoint" / "last.keras")
            write_json(run_dir / "checkpoint" / "state.json", state)

    stoppers = []
    if last_phase:
        stoppers.append(keras.callbacks.EarlyStopping(monitor="val_auroc", mode="max",
                                                      patience=cfg.early_stopping_patience, verbose=1))
    if cfg.schedule == "plateau":
        stoppers.append(keras.callbacks.ReduceLROnPlateau(monitor="val_auroc", mode="max", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience, min_lr=1e-7, verbose=1))
    cbs = [EpochEnd(), NaNGuard(), keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True), *stoppers]
    if cfg.tensorboard:
        cbs.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard")))
    cbs.append(BestAndResume(stoppers))
    return cbs


def _check_same_config(run_dir: Path, cfg: Config) -> None:
    saved = read_json(run_dir / "config.json")
    if saved is None:
        return
    old = config_from_dict(saved, str(run_dir / "config.yaml")).to_dict()
    new = cfg.to_dict()
    diff = [k for k in new if old.get(k) != new[k] and k not in ("data_root", "cache_dir", "train_csv", "valid_csv")]
    if diff:
        k = diff[0]
        raise UserError(f"{run_dir} holds a run with {k}={old.get(k)!r}, not {new[k]!r}; use another --out to "
                        f"train a different configuration, or delete {run_dir} to start over")


def _truncate_history(run_dir: Path, epochs_done: int) -> None:
    """Drop history rows of epochs that were interrupted before their checkpoint was saved."""
    path = run_dir / "history.csv"
    if path.is_file() and path.stat().st_size:
        hist = pd.read_csv(path)
        hist = hist[hist["epoch"] < epochs_done]
        write_csv(path, hist)


def train_run(cfg: Config, out: str | os.PathLike, log=print) -> dict:
    """Train (or resume, or skip if finished) one run; returns its summary metrics."""
    from benchmark.prepare import prepare

    run_dir = Path(out)
    status = read_status(run_dir)
    if status.get("status") == "done":
        log(f"{run_dir} is finished; nothing to do (delete it to train again)")
        return read_json(run_dir / "metrics.json", {}).get("test", {}).get("summary", {})
    from models.registry import get_spec

    get_spec(cfg.backbone)  # unknown backbone: a clear error before any work
    _check_same_config(run_dir, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", cfg.to_dict())
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    # TensorFlow, the model and the input pipeline are set up while a new cache's images are decoded, and
    # training starts while they are made durable
    data = prepare(cfg, log=log, wait=False, decoded=False)
    write_status(run_dir, "running", pid=os.getpid())
    try:
        return _train(cfg, run_dir, data, log)
    except UserError as exc:  # TrainingFailed included: the message is the whole story
        write_status(run_dir, "failed", error=str(exc))
        raise
    except Exception as exc:  # recorded for the sweep, then re-raised with its traceback
        write_status(run_dir, "failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise
    finally:
        data.cancel()  # still decoding only when the run failed before it needed the images


def _train(cfg: Config, run_dir: Path, data, log) -> dict:
    import keras

    import benchmark.losses  # noqa: F401  (registers the losses that saved models name)
    import models.layers  # noqa: F401  (registers the preprocessing layer)
    from models.classifier import build_classifier
    from models.flops import count_flops

    data.check()  # a bad image found while TensorFlow loaded: say so before its device set-up logs
    strategy = setup_runtime(cfg)  # before anything lists the devices: logical CPUs are fixed once TF starts
    if not (run_dir / "environment.json").is_file():
        write_json(run_dir / "environment.json", environment())
    def scope():
        return strategy.scope() if strategy else contextlib.nullcontext()

    images = data.images  # read only after data.complete(), below
    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    n_labels = len(data.labels)
    from benchmark.pipeline import make_dataset

    drop = strategy is not None and len(train.rows) >= cfg.batch_size  # no replica may get an empty batch
    train_ds = make_dataset(images, train.rows, train.targets, cfg.batch_size, shuffle=True, seed=cfg.seed,
                            deterministic=cfg.deterministic, drop_remainder=drop)
    steps = len(train.rows) // cfg.batch_size if drop else math.ceil(len(train.rows) / cfg.batch_size)
    if cfg.steps_per_epoch:
        steps = min(steps, cfg.steps_per_epoch)
        train_ds = train_ds.repeat()
    state_file = run_dir / "checkpoint" / "state.json"
    state = read_json(state_file, {}) or {}
    epochs_done = state.get("epochs_done", 0)
    with scope():
        if epochs_done and (run_dir / "checkpoint" / "last.keras").is_file():
            log(f"resuming {run_dir} after epoch {epochs_done}")
            model = keras.models.load_model(run_dir / "checkpoint" / "last.keras")
            _truncate_history(run_dir, epochs_done)
        else:
            state, epochs_done = {}, 0
            (run_dir / "history.csv").unlink(missing_ok=True)
            model = build_classifier(cfg, n_labels)
    data.complete()
    log(f"{cfg.backbone}: {model.count_params():,} parameters; {len(train.rows)} train / {len(val.rows)} val / "
        f"{len(test.rows)} test images at {cfg.image_size} px; labels: {', '.join(data.labels)}")
    phases = _phases(cfg)
    verbose = 1 if sys.stdout.isatty() else 2
    stopped = state.get("stopped_early", False)
    for i, (first, end, trainable, lr) in enumerate(phases):
        if end <= epochs_done or stopped:
            continue
        last = i == len(phases) - 1
        resumed_inside = epochs_done > first and state.get("phase") == i
        if not resumed_inside:
            with scope():
                model.get_layer("backbone").trainable = trainable
                _compile(model, cfg, lr, steps, end - first, train.targets)
        state["phase"] = i
        cbs = _callbacks(cfg, run_dir, val, train, images, state, last)
        history = model.fit(train_ds, epochs=end, initial_epoch=max(first, epochs_done), steps_per_epoch=steps,
                            callbacks=cbs, verbose=verbose, shuffle=False)
        epochs_done = state.get("epochs_done", epochs_done)
        if state.get("nan"):
            raise TrainingFailed(f"{cfg.backbone}: {state['nan']} in epoch {epochs_done + 1}; "
                                 f"lower learning_rate or use precision: float32")
        if last and len(history.epoch) and epochs_done < end:
            state["stopped_early"] = True
            write_json(state_file, state)
    if (run_dir / "checkpoint" / BEST_WEIGHTS).is_file():  # else baseline: evaluated without training
        model.load_weights(run_dir / "checkpoint" / BEST_WEIGHTS)
    atomic_save_model(model, run_dir / "model.keras")
    return finish_run(cfg, run_dir, model, data, state, count_flops(model), steps, log)


def predictions_frame(split, labels, probs: np.ndarray) -> pd.DataFrame:
    """image path, patient, then y_true_<label> (1, 0 or empty) and y_prob_<label> for each label."""
    cols = {"path": split.frame["path"].to_numpy(), "patient": split.frame["patient"].to_numpy()}
    for j, label in enumerate(labels):
        cols[f"y_true_{label}"] = pd.array(np.where(np.isnan(split.truth[:, j]), np.nan, split.truth[:, j]), dtype="Float64").astype("Int64")
    for j, label in enumerate(labels):
        cols[f"y_prob_{label}"] = probs[:, j]
    return pd.DataFrame(cols)


def finish_run(cfg: Config, run_dir: Path, model, data, state: dict, flops: int, steps: int, log) -> dict:
    """Predictions for val and test, thresholds from val, metrics, timing and Grad-CAM; then status done."""
    from reports.metrics import choose_thresholds, compute_metrics

    images = data.cache.images
    labels = list(data.labels)
    probs = {}
    for name in ("val", "test"):
        split = data.splits[name]
        probs[name] = predict_probs(model, images, split.rows, cfg.batch_size)
        if name == "test":
            t0 = time.perf_counter()  # second pass: without tracing
            predict_probs(model, images, split.rows, cfg.batch_size)
            infer_ms = 1000 * (time.perf_counter() - t0) / max(1, len(split.rows))
        write_csv(run_dir / f"predictions_{name}.csv", predictions_frame(split, labels, probs[name]))
    val, test = data.splits["val"], data.splits["test"]
    thresholds = choose_thresholds(val.truth, probs["val"], labels)
    write_json(run_dir / "thresholds.json", {"chosen_on": "val", "selected": "f1", "labels": labels,
                                             "thresholds": thresholds})
    metrics = {name: compute_metrics(data.splits[name].truth, probs[name], labels, data.splits[name].frame["patient"],
                                     thresholds, n_boot=cfg.bootstrap, seed=cfg.seed, curves=(name == "test"))
               for name in ("val", "test")}
    metrics["synthetic"] = data.dataset.synthetic
    write_json(run_dir / "metrics.json", metrics)
    epoch_seconds = state.get("epoch_seconds", [])
    timed = epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds
    images_per_epoch = min(len(data.splits["train"].rows), steps * cfg.batch_size)
    write_json(run_dir / "timing.json", {
        "params": int(model.count_params()),
        "flops": int(flops),
        "train_seconds": float(state.get("train_seconds", 0.0)),
        "epochs": int(state.get("epochs_done", 0)),
        "best_epoch": state.get("best_epoch"),
        "train_images_per_s": float(images_per_epoch * len(timed) / sum(timed)) if timed and sum(timed) else None,
        "inference_ms_per_image": float(infer_ms),
        "inference_batch_size": int(cfg.batch_size),
        "image_size": int(cfg.image_size),
    })
    if cfg.gradcam_images:
        try:
            from reports.gradcam import gallery_for_run

            gallery_for_run(model, images, test, labels, probs["test"], thresholds, run_dir / "gradcam",
                            cfg.gradcam_images)
        except Exception as exc:  # a picture must not fail a finished training run
            log(f"warning: Grad-CAM gallery not written: {type(exc).__name__}: {exc}")
    summary = metrics["test"]["summary"]
    write_status(run_dir, "done", val_auroc=metrics["val"]["summary"]["auroc_macro"],
                 test_auroc=summary["auroc_macro"], synthetic=data.dataset.synthetic)
    log(f"{cfg.backbone}: test mean AUROC {summary['auroc_macro']}, val {metrics['val']['summary']['auroc_macro']}")
    return summary

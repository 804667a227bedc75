"""Training one backbone into a run directory, resumable after any interruption (kill -9 included).

Each finished epoch saves the whole model with its optimiser (``checkpoint/last.keras``) and the run state
(``checkpoint/state.json``, see `benchmark.callbacks.RunState`); the weights of the best epoch on validation mean
AUROC are kept in ``checkpoint/best.weights.h5`` and become ``model.keras`` when training ends, after which
`benchmark.evaluation.finish_run` scores it. Re-running the same command continues after the last finished epoch;
a finished run (status.json says done) is not retrained.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path

import pandas as pd

from benchmark.config import Config
from benchmark.errors import UserError
from benchmark.rundir import (BEST, ENVIRONMENT, HISTORY, LAST, METRICS, MODEL, STATE, TENSORBOARD,
                              atomic_save_model, environment, read_config, read_json, read_status, write_config,
                              write_csv, write_json, write_status)


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


def phases(cfg: Config) -> list[tuple[int, int, bool, float]]:
    """(first epoch, end epoch, backbone trainable, learning rate) for each fine-tuning phase."""
    if cfg.finetune == "baseline":
        return []
    if cfg.finetune == "linear":
        return [(0, cfg.epochs, False, cfg.learning_rate)]
    if cfg.finetune == "gradual":
        g = min(cfg.gradual_epochs, cfg.epochs)
        return [(0, g, False, cfg.learning_rate), (g, cfg.epochs, True, cfg.learning_rate * cfg.gradual_lr_factor)]
    return [(0, cfg.epochs, True, cfg.learning_rate)]


def make_optimizer(cfg: Config, lr: float, steps_per_epoch: int, epochs: int):
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

    model.compile(optimizer=make_optimizer(cfg, lr, steps, epochs),
                  loss=make_loss(cfg.loss, train_targets, cfg.focal_gamma), jit_compile=bool(cfg.xla))


def _callbacks(cfg: Config, run_dir: Path, data, state, last_phase: bool) -> list:
    import keras

    from benchmark.callbacks import Checkpoint, NaNGuard, ValidationScore

    train, val = data.splits["train"], data.splits["val"]
    stoppers = []
    if last_phase:
        stoppers.append(keras.callbacks.EarlyStopping(monitor="val_auroc", mode="max",
                                                      patience=cfg.early_stopping_patience, verbose=1))
    if cfg.schedule == "plateau":
        stoppers.append(keras.callbacks.ReduceLROnPlateau(monitor="val_auroc", mode="max", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience, min_lr=1e-7, verbose=1))
    cbs = [ValidationScore(data.images, train.rows, val.rows, val.truth, cfg.batch_size, cfg.bn_reestimate_batches,
                           cfg.seed, state),
           NaNGuard(state), keras.callbacks.CSVLogger(str(run_dir / HISTORY), append=True), *stoppers]
    if cfg.tensorboard:
        cbs.append(keras.callbacks.TensorBoard(str(run_dir / TENSORBOARD)))
    cbs.append(Checkpoint(run_dir, state, stoppers))
    return cbs


def _check_same_config(run_dir: Path, cfg: Config) -> None:
    saved = read_config(run_dir)
    if saved is None:
        return
    old, new = saved.to_dict(), cfg.to_dict()
    diff = [k for k in new if old.get(k) != new[k] and k not in ("data_root", "cache_dir", "train_csv", "valid_csv")]
    if diff:
        k = diff[0]
        raise UserError(f"{run_dir} holds a run with {k}={old.get(k)!r}, not {new[k]!r}; use another --out to "
                        f"train a different configuration, or delete {run_dir} to start over")


def _truncate_history(run_dir: Path, epochs_done: int) -> None:
    """Drop history rows of epochs that were interrupted before their checkpoint was saved."""
    path = run_dir / HISTORY
    if path.is_file() and path.stat().st_size:
        hist = pd.read_csv(path)
        hist = hist[hist["epoch"] < epochs_done]
        write_csv(path, hist)


def train_run(cfg: Config, out: str | os.PathLike, log=print) -> dict:
    """Train (or resume, or skip if finished) one run; returns its test summary metrics."""
    from benchmark.prepare import prepare

    run_dir = Path(out)
    status = read_status(run_dir)
    if status.get("status") == "done":
        log(f"{run_dir} is finished; nothing to do (delete it to train again)")
        return read_json(run_dir / METRICS, {}).get("test", {}).get("summary", {})
    _check_same_config(run_dir, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, cfg)
    # TensorFlow, the model and the input pipeline are set up while a new cache's images are decoded, and
    # training starts while they are made durable; leaving the block early stops the decoding
    with prepare(cfg, log=log, wait=False, decoded=False) as data:
        write_status(run_dir, "running", pid=os.getpid())
        try:
            return _train(cfg, run_dir, data, log)
        except UserError as exc:  # TrainingFailed included: the message is the whole story
            write_status(run_dir, "failed", error=str(exc))
            raise
        except Exception as exc:  # recorded for the sweep, then re-raised with its traceback
            first = str(exc).splitlines()[0] if str(exc) else ""
            write_status(run_dir, "failed", error=f"{type(exc).__name__}: {first}")
            raise


def _train(cfg: Config, run_dir: Path, data, log) -> dict:
    import keras

    from benchmark.callbacks import RunState
    from benchmark.evaluation import finish_run
    from benchmark.inference import register_custom_objects
    from benchmark.pipeline import make_dataset
    from models.classifier import build_classifier
    from models.flops import count_flops

    register_custom_objects()
    data.check()  # a bad image found while TensorFlow loaded: say so before its device set-up logs
    strategy = setup_runtime(cfg)  # before anything lists the devices: logical CPUs are fixed once TF starts
    if not (run_dir / ENVIRONMENT).is_file():
        write_json(run_dir / ENVIRONMENT, environment())

    def scope():
        return strategy.scope() if strategy else contextlib.nullcontext()

    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    drop = strategy is not None and len(train.rows) >= cfg.batch_size  # no replica may get an empty batch
    train_ds = make_dataset(data.images, train.rows, train.targets, cfg.batch_size, shuffle=True, seed=cfg.seed,
                            deterministic=cfg.deterministic, drop_remainder=drop)
    steps = len(train.rows) // cfg.batch_size if drop else math.ceil(len(train.rows) / cfg.batch_size)
    if cfg.steps_per_epoch:
        steps = min(steps, cfg.steps_per_epoch)
        train_ds = train_ds.repeat()
    state = RunState.load(run_dir / STATE)
    with scope():
        if state.epochs_done and (run_dir / LAST).is_file():
            log(f"resuming {run_dir} after epoch {state.epochs_done}")
            model = keras.models.load_model(run_dir / LAST)
            _truncate_history(run_dir, state.epochs_done)
        else:
            state = RunState()
            (run_dir / HISTORY).unlink(missing_ok=True)
            model = build_classifier(cfg, len(data.labels))
    data.complete()
    log(f"{cfg.backbone}: {model.count_params():,} parameters; {len(train.rows)} train / {len(val.rows)} val / "
        f"{len(test.rows)} test images at {cfg.image_size} px; labels: {', '.join(data.labels)}")
    verbose = 1 if sys.stdout.isatty() else 2
    plan = phases(cfg)
    for i, (first, end, trainable, lr) in enumerate(plan):
        if end <= state.epochs_done or state.stopped_early:
            continue
        last = i == len(plan) - 1
        resumed_inside = state.epochs_done > first and state.phase == i
        if not resumed_inside:
            with scope():
                model.get_layer("backbone").trainable = trainable
                _compile(model, cfg, lr, steps, end - first, train.targets)
        state.phase = i
        history = model.fit(train_ds, epochs=end, initial_epoch=max(first, state.epochs_done), steps_per_epoch=steps,
                            callbacks=_callbacks(cfg, run_dir, data, state, last), verbose=verbose, shuffle=False)
        if state.nan:
            raise TrainingFailed(f"{cfg.backbone}: {state.nan} in epoch {state.epochs_done + 1}; "
                                 f"lower learning_rate or use precision: float32")
        if last and len(history.epoch) and state.epochs_done < end:
            state.stopped_early = True
            state.save(run_dir / STATE)
    if (run_dir / BEST).is_file():  # else baseline: evaluated without training
        model.load_weights(run_dir / BEST)
    atomic_save_model(model, run_dir / MODEL)
    return finish_run(cfg, run_dir, model, data, state, count_flops(model), steps, log)

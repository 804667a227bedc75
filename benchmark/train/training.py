"""Training one backbone into a run directory, resumable after any interruption (kill -9 included).

Each finished epoch saves the whole model with its optimiser (``checkpoint/epoch-NNNN.keras``), the best epoch's
weights (``checkpoint/best-NNNN.weights.h5``) and, last, the run state that names them (``checkpoint/state.json``,
see `benchmark.train.callbacks.RunState`), the epoch's commit point. When training ends the best weights become
``model.keras`` (without the optimiser), `benchmark.evaluation.evaluate.finish_run` scores it, and the checkpoint folder is
removed. Re-running the same command continues after the last finished epoch, and a finished run is skipped, only
when the run's fingerprint (its configuration and data, see `benchmark.runs.fingerprint`) is unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from benchmark.config import Config
from benchmark.errors import UserError
from benchmark.runs.fingerprint import config_part, differences
from benchmark.runs.ownership import FolderLock, claim
from benchmark.runs.rundir import (
    CHECKPOINT,
    ENVIRONMENT,
    FINGERPRINT,
    HISTORY,
    METRICS,
    MODEL,
    STATE,
    STATUS,
    TENSORBOARD,
    atomic_save_model,
    read_config,
    read_json,
    read_status,
    write_config,
    write_csv,
    write_json,
    write_status,
)


class TrainingFailed(UserError):
    """The run could not finish (NaN loss, ...): recorded in status.json, one-line message, exit code 2."""


def setup_runtime(cfg: Config):
    """Seeds, determinism, precision, devices, through the engine (benchmark.engines); returns the distribution
    strategy (or None). On JAX and PyTorch: seeds and precision only (one device; TensorFlow is not imported)."""
    from benchmark.engines import current

    return current().setup(cfg)


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

    from benchmark.engines import current
    from models.losses import make_loss

    jit = current().jit(cfg)  # JAX always; TensorFlow (XLA) and PyTorch (torch.compile) when `xla` asks
    model.compile(optimizer=make_optimizer(cfg, lr, steps, epochs),
                  loss=make_loss(cfg.loss, train_targets, cfg.focal_gamma), jit_compile=jit)


def _callbacks(cfg: Config, run_dir: Path, data, state, last_phase: bool) -> list:
    import keras

    from benchmark.train.callbacks import (
        BatchNormReestimate,
        Checkpoint,
        EpochTimer,
        LearningRateLog,
        NaNGuard,
        Progress,
        ValidationScore,
    )

    train, val = data.splits["train"], data.splits["val"]
    stoppers = []
    if last_phase:
        stoppers.append(keras.callbacks.EarlyStopping(monitor="val_auroc", mode="max",
                                                      patience=cfg.early_stopping_patience, verbose=1))
    if cfg.schedule == "plateau":
        stoppers.append(keras.callbacks.ReduceLROnPlateau(monitor="val_auroc", mode="max", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience, min_lr=1e-7, verbose=1))
    cbs = [EpochTimer()]
    if reestimate_batches(cfg):
        cbs.append(BatchNormReestimate(data.images, train.rows, cfg.batch_size, reestimate_batches(cfg), cfg.seed,
                                       state))
    cbs += [ValidationScore(data.images, val.rows, val.truth, cfg.batch_size, state), LearningRateLog(),
            NaNGuard(state), keras.callbacks.CSVLogger(str(run_dir / HISTORY), append=True),
            Progress(run_dir, cfg.epochs)]
    if cfg.tensorboard:  # before the stoppers: it reads the optimiser's learning rate, which the plateau may lower
        cbs.append(keras.callbacks.TensorBoard(str(run_dir / TENSORBOARD)))
    cbs += [*stoppers, Checkpoint(run_dir, state, stoppers)]
    return cbs


def reestimate_batches(cfg: Config) -> int:
    """BatchNorm statistics are re-estimated for runs from scratch (their moving averages lag behind the weights);
    runs from pretrained weights keep theirs, unless bn_reestimate: true."""
    from benchmark.config import weights_for

    wanted = cfg.bn_reestimate is True or (cfg.bn_reestimate == "auto" and weights_for(cfg) is None)
    return cfg.bn_reestimate_batches if wanted else 0


def _check_same_config(run_dir: Path, cfg: Config) -> None:
    """For a run made by an earlier version (no fingerprint.json): its config.yaml must match."""
    saved = read_config(run_dir)
    if saved is None:
        return
    old, new = config_part(saved), config_part(cfg)
    diff = differences({"config": old}, {"config": new})
    if diff:
        raise UserError(_refusal(run_dir, diff))


def _refusal(run_dir: Path, diff: list[str]) -> str:
    shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
    return (f"{run_dir} holds a run of other settings or data ({shown}); nothing was changed. Use another --out "
            f"for these settings, or retrain the run (python -m benchmark retrain, for a sweep's runs) or delete "
            f"{run_dir} to train it again")


def _truncate_history(run_dir: Path, epochs_done: int) -> None:
    """Drop history rows of epochs that were interrupted before their checkpoint was saved."""
    path = run_dir / HISTORY
    if path.is_file() and path.stat().st_size:
        hist = pd.read_csv(path)
        hist = hist[hist["epoch"] < epochs_done]
        write_csv(path, hist)


def disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and (exc.errno in (errno.ENOSPC, errno.EDQUOT)
                                         or "No space left" in str(exc) or "Disk quota" in str(exc))


def train_run(cfg: Config, out: str | os.PathLike, log=print) -> dict:
    """Train (or resume, or skip if finished with the same fingerprint) one run; returns its test summary.

    The run directory must be missing, empty or a run directory; the run holds a lock on it while it works."""
    run_dir = claim(Path(out), "run", "a run directory", "choose another --out (a missing or empty folder)")
    with FolderLock(run_dir, "command (train, a sweep or a retrain)"):
        return _train_locked(cfg, run_dir, log)


def _train_locked(cfg: Config, run_dir: Path, log) -> dict:
    from benchmark.input.prepare import data_fingerprint, prepare
    from benchmark.runs.rundir import RunState

    status = read_status(run_dir)
    saved = read_json(run_dir / FINGERPRINT)
    done = status.get("status") == "done"
    progress = done or RunState.load(run_dir / STATE).epochs_done > 0
    new = {"config": config_part(cfg)}
    if progress and saved:
        diff = differences({"config": saved.get("config", {})}, new)
        if diff:
            raise UserError(_refusal(run_dir, diff))
    elif progress:
        _check_same_config(run_dir, cfg)
    if done:
        if saved:
            diff = differences(saved, {**new, "data": data_fingerprint(cfg, log=log)})
            if diff:
                raise UserError(_refusal(run_dir, diff))
        log(f"{run_dir} is finished; nothing to do (retrain it, or delete it, to train again)")
        return read_json(run_dir / METRICS, {}).get("test", {}).get("summary", {})
    from benchmark.evaluation.evaluate import check_external

    check_external(cfg)
    # TensorFlow, the model and the input pipeline are set up while a new cache's images are decoded, and
    # training starts while they are made durable; leaving the block early stops the decoding
    with prepare(cfg, log=log, wait=False, decoded=False) as data:
        fingerprint = {**new, "data": data.fingerprint()}
        if progress and saved:
            diff = differences(saved, fingerprint)
            if diff:
                raise UserError(_refusal(run_dir, diff))
        write_status(run_dir, "running", pid=os.getpid())
        try:
            return _train(cfg, run_dir, data, fingerprint, log)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the command line turns it into this)
            _record(run_dir, "interrupted", error="interrupted; the same command resumes after the last epoch")
            raise
        except UserError as exc:  # TrainingFailed included: the message is the whole story
            _record(run_dir, "failed", error=str(exc))
            raise
        except Exception as exc:  # recorded for the sweep, then re-raised with its traceback
            if disk_full(exc):
                where = Path(exc.filename).parent if getattr(exc, "filename", None) else run_dir
                message = (f"no space left on the device holding {where} ({exc.strerror or exc}); free space "
                           f"there, then run the same command again to resume")
                _record(run_dir, "failed", error=message)
                raise UserError(message) from None
            first = str(exc).splitlines()[0] if str(exc) else ""
            _record(run_dir, "failed", error=f"{type(exc).__name__}: {first}")
            raise


def _record(run_dir: Path, status: str, **extra) -> None:
    """Write the run's status; a disk too full even for that is said on stderr instead."""
    try:
        write_status(run_dir, status, **extra)
    except OSError as exc:
        print(f"warning: could not record status {status!r} in {run_dir / STATUS}: {exc}", file=sys.stderr)


def _train(cfg: Config, run_dir: Path, data, fingerprint: dict, log) -> dict:

    from benchmark.engines import current
    from benchmark.evaluation.evaluate import finish_run
    from benchmark.evaluation.inference import register_custom_objects
    from benchmark.runs.rundir import RunState
    from benchmark.train.callbacks import restore_rng_state
    from benchmark.train.network import classifier_for
    from models.flops import count_flops

    register_custom_objects()
    data.check()  # a bad image found while TensorFlow loaded: say so before its device set-up logs
    strategy = setup_runtime(cfg)  # before anything lists the devices: logical CPUs are fixed once TF starts
    if not (run_dir / ENVIRONMENT).is_file():
        from benchmark.engines import current

        write_json(run_dir / ENVIRONMENT, current().environment())

    def scope():
        return strategy.scope() if strategy else contextlib.nullcontext()

    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    if cfg.finetune != "baseline" and not _any_label_defined(val.truth):
        raise UserError(f"the validation split ({len(val.rows)} images) has no label with both positives and "
                        f"negatives, so the validation AUROC that early stopping and the best epoch use is undefined; "
                        f"use more validation images (val_fraction) or other labels")
    drop = strategy is not None and len(train.rows) >= cfg.batch_size  # no replica may get an empty batch
    steps = len(train.rows) // cfg.batch_size if drop else math.ceil(len(train.rows) / cfg.batch_size)
    if cfg.steps_per_epoch:
        steps = min(steps, cfg.steps_per_epoch)
    state = RunState.load(run_dir / STATE)
    train_ds = current().batches(data.images, train.rows, train.targets, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                 deterministic=cfg.deterministic, drop_remainder=drop, steps=cfg.steps_per_epoch,
                                 first_epoch=state.epochs_done if state.checkpoint else 0)
    with scope():
        if state.epochs_done and state.checkpoint and (run_dir / state.checkpoint).is_file():
            log(f"resuming {run_dir} after epoch {state.epochs_done}")
            model = load_checkpoint(run_dir / state.checkpoint)
            restore_rng_state(model, state.rng)
            _truncate_history(run_dir, state.epochs_done)
        else:
            state = RunState()
            (run_dir / HISTORY).unlink(missing_ok=True)
            shutil.rmtree(run_dir / CHECKPOINT, ignore_errors=True)  # a start that saved no epoch (ours)
            model = classifier_for(cfg, len(data.labels))
    data.complete()
    # the data are known to be good: the configuration and the fingerprint are recorded now
    write_config(run_dir, cfg)
    write_json(run_dir / FINGERPRINT, fingerprint)
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
    if state.best_weights and (run_dir / state.best_weights).is_file():  # else baseline: not trained
        model.load_weights(run_dir / state.best_weights)
    atomic_save_model(model, run_dir / MODEL)  # without the optimiser's state
    summary = finish_run(cfg, run_dir, model, data, state, count_flops(model), steps, log)
    if not cfg.keep_checkpoint:
        shutil.rmtree(run_dir / CHECKPOINT, ignore_errors=True)  # the resume state: no longer needed
    return summary


def _any_label_defined(truth) -> bool:
    import numpy as np

    return any(len(np.unique(col[~np.isnan(col)])) == 2 for col in np.asarray(truth, float).T)


def load_checkpoint(path: Path):
    """A resume checkpoint (model and optimiser); a damaged one is a UserError naming it."""
    import keras

    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:
        raise UserError(f"the checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc)[:100]}); delete "
                        f"{path.parent} to train the run from its start") from None

"""Inference with a trained model: probabilities for cache rows (with TenCrop test-time augmentation), the
prediction files' table, and loading a run's saved model. Used by training's validation, by finishing a run and
by `evaluate` / `predict`; nothing here trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.runs.rundir import MODEL


def predict_probs(model, images, rows, batch_size: int, tta: bool = False, mirror: bool = False) -> np.ndarray:
    """Probabilities for cache rows, in order; with `tta`, the mean over TenCrop views (mirrored too with
    `mirror`, for models trained with horizontal flips)."""
    import keras

    from benchmark.engines import current
    from benchmark.input.batches import image_batches

    engine = current()

    n = len(rows)
    if n == 0:
        return np.zeros((0, model.output_shape[-1]))
    # full batches only (the last one padded, then trimmed): a replica must never get an empty batch
    padded = np.concatenate([rows, np.repeat(rows[-1:], (-n) % batch_size)])
    ds = engine.batches(images, padded, np.zeros((len(padded), 1), np.float32), batch_size)
    if not tta:
        if hasattr(ds, "map"):  # tf.data: the images alone
            ds = ds.map(lambda x, y: x)
        return model.predict(ds, verbose=0)[:n].astype(np.float64)
    out = []
    for x in image_batches(ds):
        crops = engine.ten_crop(x, mirror)
        out.append(np.mean([keras.ops.convert_to_numpy(model(c, training=False)) for c in crops], axis=0))
    return np.concatenate(out)[:n].astype(np.float64)


PREDICTION_META = ("path", "patient", "study", "sex", "age", "view")


def predictions_frame(split, labels, probs: np.ndarray) -> pd.DataFrame:
    """image path, patient, study, sex, age and view (AP / PA where known), then y_true_<label> (1, 0 or empty)
    and y_prob_<label> for each label: everything the metrics, the scoring unit and the subgroups are computed
    from."""
    frame = split.frame
    view = frame["projection"].astype(str) if "projection" in frame else pd.Series("", index=frame.index)
    cols = {"path": frame["path"].to_numpy(), "patient": frame["patient"].to_numpy(),
            "study": (frame["study"] if "study" in frame else frame["path"]).to_numpy(),
            "sex": (frame["sex"] if "sex" in frame else pd.Series(None, index=frame.index)).to_numpy(),
            "age": (frame["age"] if "age" in frame else pd.Series(np.nan, index=frame.index)).to_numpy(),
            "view": view.where(view.isin(["AP", "PA"])).to_numpy()}
    for j, label in enumerate(labels):
        cols[f"y_true_{label}"] = pd.array(np.where(np.isnan(split.truth[:, j]), np.nan, split.truth[:, j]),
                                           dtype="Float64").astype("Int64")
    for j, label in enumerate(labels):
        cols[f"y_prob_{label}"] = probs[:, j]
    return pd.DataFrame(cols)


def register_custom_objects() -> None:
    """Import the modules whose classes saved models name (the losses and the preprocessing layer)."""
    import models.layers  # noqa: F401
    import models.losses  # noqa: F401


def load_model(run: Path, n_labels: int):
    """A run's best model (model.keras), checked against the number of labels its files name."""
    import keras

    register_custom_objects()
    try:
        model = keras.models.load_model(run / MODEL, compile=False, safe_mode=True)
    except Exception as exc:  # a damaged or foreign file: name it
        raise UserError(f"{run / MODEL} cannot be read ({type(exc).__name__}: {str(exc)[:100]}); retrain the run") \
            from None
    if model.output_shape[-1] != n_labels:
        raise UserError(f"{run}/{MODEL} predicts {model.output_shape[-1]} labels but its thresholds.json names "
                        f"{n_labels}; the run directory is inconsistent, retrain it")
    return model

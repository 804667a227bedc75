"""Multi-label losses with masking: a NaN target (an ignored label) contributes nothing to the loss.

Each loss averages over the labels that are present in the batch, so a batch with many ignored labels is not
down-weighted. Weighted BCE multiplies the positive term of label j by its positive weight (negatives/positives in
the training split, as in CheXNet-style weighting); focal loss is Lin et al. (2017) without the alpha term.
"""

from __future__ import annotations

import keras
from keras import ops

EPS = 1e-7


def _masked(y_true, y_pred):
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.clip(ops.cast(y_pred, "float32"), EPS, 1.0 - EPS)
    mask = ops.logical_not(ops.isnan(y_true))
    y = ops.where(mask, y_true, ops.zeros_like(y_true))
    return y, y_pred, ops.cast(mask, "float32")


def _reduce(values, mask):
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="cxr_bench")
class MaskedBCE(keras.losses.Loss):
    """Binary cross-entropy over present labels; `pos_weight` (one per label) weights the positive term."""

    def __init__(self, pos_weight=None, name="masked_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weight = None if pos_weight is None else [float(w) for w in pos_weight]

    def call(self, y_true, y_pred):
        y, p, mask = _masked(y_true, y_pred)
        w = 1.0 if self.pos_weight is None else ops.convert_to_tensor(self.pos_weight, "float32")
        values = -(w * y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p))
        return _reduce(values, mask)

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.pos_weight}


@keras.saving.register_keras_serializable(package="cxr_bench")
class MaskedFocal(keras.losses.Loss):
    """Focal loss over present labels: -(1-p_t)^gamma * log(p_t)."""

    def __init__(self, gamma=2.0, name="masked_focal", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        y, p, mask = _masked(y_true, y_pred)
        p_t = y * p + (1.0 - y) * (1.0 - p)
        values = -ops.power(1.0 - p_t, self.gamma) * ops.log(p_t)
        return _reduce(values, mask)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


def positive_weights(targets) -> list[float]:
    """Per-label negatives / positives over the present training targets (1.0 where a label has no positive)."""
    import numpy as np

    t = np.asarray(targets, dtype=np.float64)
    present = ~np.isnan(t)
    pos = np.where(present, t, 0).sum(axis=0)
    neg = np.where(present, 1 - t, 0).sum(axis=0)
    return [float(n / p) if p > 0 else 1.0 for n, p in zip(neg, pos)]


def make_loss(name: str, train_targets=None, gamma: float = 2.0) -> keras.losses.Loss:
    if name in ("bce", "masked_bce"):
        return MaskedBCE()
    if name == "weighted_bce":
        return MaskedBCE(pos_weight=positive_weights(train_targets), name="weighted_bce")
    if name == "focal":
        return MaskedFocal(gamma)
    raise ValueError(name)

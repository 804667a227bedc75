"""Losses against values computed by hand."""

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from models.losses import MaskedBCE, MaskedFocal, make_loss, positive_weights  # noqa: E402

NAN = float("nan")


def value(loss, y, p):
    return float(loss(np.array(y, np.float32), np.array(p, np.float32)))


def test_bce_by_hand():
    expected = -(math.log(0.8) + math.log(1 - 0.3)) / 2
    assert value(MaskedBCE(), [[1, 0]], [[0.8, 0.3]]) == pytest.approx(expected, rel=1e-5)


def test_masked_labels_contribute_nothing():
    a = value(MaskedBCE(), [[1, NAN], [NAN, 0]], [[0.8, 0.01], [0.99, 0.3]])
    assert a == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2, rel=1e-5)
    assert value(MaskedBCE(), [[NAN, NAN]], [[0.5, 0.5]]) == 0.0


def test_weighted_bce_by_hand():
    loss = MaskedBCE(pos_weight=[3.0, 1.0])
    expected = -(3.0 * math.log(0.8) + math.log(1 - 0.3)) / 2
    assert value(loss, [[1, 0]], [[0.8, 0.3]]) == pytest.approx(expected, rel=1e-5)
    targets = np.array([[1, 0], [0, 0], [0, 1], [0, NAN]], float)
    assert positive_weights(targets) == [3.0, 2.0]


def test_focal_by_hand():
    gamma = 2.0
    expected = (-(1 - 0.8) ** gamma * math.log(0.8) - (1 - 0.7) ** gamma * math.log(0.7)) / 2
    assert value(MaskedFocal(gamma), [[1, 0]], [[0.8, 0.3]]) == pytest.approx(expected, rel=1e-5)
    assert value(MaskedFocal(0.0), [[1, 0]], [[0.8, 0.3]]) == pytest.approx(value(MaskedBCE(), [[1, 0]], [[0.8, 0.3]]))


def test_soft_targets_from_label_smoothing():
    expected = -(0.7 * math.log(0.6) + 0.3 * math.log(0.4))
    assert value(make_loss("bce"), [[0.7]], [[0.6]]) == pytest.approx(expected, rel=1e-5)

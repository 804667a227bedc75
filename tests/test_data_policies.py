"""Uncertainty policies (training targets) and evaluation targets, by hand."""

import numpy as np
import pytest

from benchmark.data.policies import evaluation_targets, resolve_policies, training_targets
from benchmark.errors import UserError

NAN = np.nan
LABELS = ["Atelectasis", "Cardiomegaly"]
RAW = np.array([[1, 0], [0, -1], [-1, NAN], [NAN, 1]], dtype=np.float32)


def same(a, b):
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_each_policy_by_hand():
    same(training_targets(RAW, LABELS, "zeros"), [[1, 0], [0, 0], [0, 0], [0, 1]])
    same(training_targets(RAW, LABELS, "ones"), [[1, 0], [0, 1], [1, 0], [0, 1]])
    same(training_targets(RAW, LABELS, "ignore"), [[1, 0], [0, NAN], [NAN, 0], [0, 1]])
    # mixed: ones for Atelectasis (and Edema), zeros for the rest
    same(training_targets(RAW, LABELS, "mixed"), [[1, 0], [0, 0], [1, 0], [0, 1]])
    same(training_targets(RAW, LABELS, "zeros", blank="ignore"), [[1, 0], [0, 0], [0, NAN], [NAN, 1]])
    same(training_targets(RAW, LABELS, {"Atelectasis": "ignore", "Cardiomegaly": "ones"}),
         [[1, 0], [0, 1], [NAN, 0], [0, 1]])


def test_label_smoothing_ranges_and_seed():
    raw = np.full((1000, 1), -1, np.float32)
    ones = training_targets(raw, ["Edema"], "smooth_ones", seed=1)
    zeros = training_targets(raw, ["Edema"], "smooth_zeros", seed=1)
    assert ones.min() >= 0.55 and ones.max() <= 0.85 and ones.std() > 0.05
    assert zeros.min() >= 0.0 and zeros.max() <= 0.30
    same(ones, training_targets(raw, ["Edema"], "smooth_ones", seed=1))


def test_evaluation_targets_never_guess_uncertain():
    same(evaluation_targets(RAW), [[1, 0], [0, NAN], [NAN, 0], [0, 1]])
    same(evaluation_targets(RAW, blank="ignore"), [[1, 0], [0, NAN], [NAN, NAN], [NAN, 1]])


def test_policy_for_unknown_label():
    with pytest.raises(UserError, match="not trained"):
        resolve_policies({"Fracture": "ones"}, LABELS)

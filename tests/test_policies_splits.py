import numpy as np
import pandas as pd
import pytest

from benchmark.errors import UserError
from benchmark.policies import evaluation_targets, resolve_policies, training_targets
from benchmark.splits import check_leakage, patient_split, subsample_patients

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


def test_patient_split_is_patientwise_deterministic_and_sized():
    patients = pd.Series([f"p{i // 3}" for i in range(3000)])  # 1000 patients, 3 images each
    a = patient_split(patients, {"val": 0.1, "test": 0.2}, seed=7)
    b = patient_split(patients, {"val": 0.1, "test": 0.2}, seed=7)
    c = patient_split(patients, {"val": 0.1, "test": 0.2}, seed=8)
    assert (a == b).all() and (a != c).any()
    frame = pd.DataFrame({"patient": patients, "split": a})
    check_leakage(frame)
    per_split = frame.groupby("split")["patient"].nunique()
    assert per_split["val"] == 100 and per_split["test"] == 200 and per_split["train"] == 700


def test_leakage_is_refused():
    frame = pd.DataFrame({"patient": ["a", "a", "b"], "split": ["train", "test", "val"]})
    with pytest.raises(UserError, match="patient a is in test and train"):
        check_leakage(frame, "my split file")


def test_subsample_keeps_whole_patients():
    frame = pd.DataFrame({"patient": [f"p{i // 4}" for i in range(400)], "split": "train"})
    small = subsample_patients(frame, 50, seed=0)
    assert 40 <= len(small) <= 50
    assert small.groupby("patient").size().eq(4).all()

"""Patient-wise splits: deterministic, sized, leakage refused, whole patients subsampled."""

import pandas as pd
import pytest

from benchmark.data.splits import check_leakage, patient_split, subsample_patients
from benchmark.errors import UserError


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

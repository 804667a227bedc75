"""The phantom: deterministic by seed, the CheXpert layout, labels at the real rates, and each finding drawn by its
own step (a sign where its strength is positive, nothing where it is zero)."""

import numpy as np
import pandas as pd
import pytest

from benchmark.data.labels import CHEXPERT_14
from benchmark.phantom import FOLDER, make_phantom, phantom_is_complete
from benchmark.phantom.anatomy import Anatomy
from benchmark.phantom.frontal import FRONTAL_STEPS, render_frontal
from benchmark.phantom.labels import IDX, sample_labels

FINDINGS = ["Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
            "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
            "Support Devices"]


def _frontal(label=None, strength=0.9, seed=4, size=96):
    st = np.zeros(len(CHEXPERT_14), np.float32)
    if label:
        st[IDX[label]] = strength
    anatomy = Anatomy(np.random.default_rng([seed, 1]), size)
    return render_frontal(st, anatomy, np.random.default_rng([seed, 1, 1, 1]))


def test_same_seed_same_bytes(tmp_path):
    a = make_phantom(tmp_path / "a", n=40, size=48, seed=2, workers=1)
    b = make_phantom(tmp_path / "b", n=40, size=48, seed=2, workers=2)
    assert a["images"] == b["images"] == 40
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    root = tmp_path / "a" / FOLDER
    assert phantom_is_complete(root)
    train = pd.read_csv(root / "train.csv")
    assert list(train.columns[:5]) == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]
    assert set(CHEXPERT_14) <= set(train.columns)
    assert train["Path"].str.startswith(f"{FOLDER}/train/patient").all()
    valid = pd.read_csv(root / "valid.csv")
    assert set(valid[list(CHEXPERT_14)].stack().unique()) <= {0.0, 1.0}  # the panel: no uncertainty


@pytest.mark.parametrize("label", FINDINGS)
def test_each_finding_draws_its_own_sign(label):
    normal = _frontal()
    assert np.isfinite(normal).all()
    changed = np.abs(_frontal(label) - normal) > 0.02
    assert changed.mean() > 0.001, f"{label} drew nothing"
    weaker = np.abs(_frontal(label, strength=0.3) - normal).sum()
    assert 0 < weaker, f"{label} at strength 0.3 drew nothing"


def test_steps_are_small_and_named_after_what_they_draw():
    names = [step.__name__ for step in FRONTAL_STEPS]
    for label in FINDINGS:
        key = {"Enlarged Cardiomediastinum": "mediastinum", "Cardiomegaly": "heart", "Fracture": "ribs"}.get(
            label, label.lower().replace(" ", "_"))
        assert key in names, label
    import inspect

    assert max(len(inspect.getsource(step).splitlines()) for step in FRONTAL_STEPS) <= 40


def test_labels_follow_the_real_frequencies():
    from benchmark.data.label_stats import load_label_stats

    stats = load_label_stats()
    raw = sample_labels(20000, np.random.default_rng(0), stats)
    for label in ("Pleural Effusion", "Edema", "Support Devices"):
        j = stats["labels"].index(label)
        assert (raw[:, j] == 1).mean() == pytest.approx(stats["frequencies"][label]["positive"], abs=0.01)

"""Reference outputs: this install computes the stored probabilities of the fixed checkpoint on the stored images,
and a difference beyond the tolerance is reported and fails `doctor --check-outputs`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.perf import reference_outputs as ro


def test_the_reference_file_holds_every_backbone_and_its_images():
    reference = ro.load_reference()
    assert set(reference["expected"]) == {"mobilenet", "resnet34", "resnet50", "densenet121", "resnet101"}
    images = ro.reference_images(reference)
    assert images.dtype == np.uint8 and images.shape == (4, 32, 32, 1) and images.std() > 10  # radiographs
    for probs in reference["expected"].values():
        p = np.asarray(probs)
        assert p.shape == (4, 5) and ((p > 0) & (p < 1)).all() and p.std() > 1e-4  # not one constant


@pytest.mark.slow
def test_this_install_computes_mobilenets_reference_outputs(capsys):
    import keras

    keras.utils.set_random_seed(1)  # Keras's own initialisation must not matter: the checkpoint is NumPy's
    first = [w.copy() for w in ro.fixed_model("mobilenet").get_weights()]
    keras.utils.set_random_seed(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, ro.fixed_model("mobilenet").get_weights()))
    assert main(["doctor", "--check-outputs", "--backbones", "mobilenet", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["ok"] and row["max_abs_diff"] <= 1e-5 and row["engine"] == "tensorflow"


@pytest.mark.slow
def test_a_difference_beyond_the_tolerance_fails_the_check(monkeypatch, capsys):
    reference = ro.load_reference()
    reference["expected"]["mobilenet"][2][3] += 0.01  # what another install computing differently would show
    monkeypatch.setattr(ro, "load_reference", lambda: reference)
    assert main(["doctor", "--check-outputs", "--backbones", "mobilenet"]) == 1
    out = capsys.readouterr().out
    assert "mobilenet" in out and "DIFFERENT" in out and "largest difference 0.01" in out

"""Exports of trained runs: SavedModel (and ONNX and LiteRT where their packages are installed) give the Keras
model's probabilities within 1e-4 on the run's test images, or are refused; a missing package is one line."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

from benchmark.errors import UserError


def _copy_run(sweep, name, dest):
    out, _ = sweep
    return shutil.copytree(out / "runs" / name, dest / name, ignore=shutil.ignore_patterns("checkpoint", ".lock"))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mobilenet", "resnet34"])
def test_exports_match_the_keras_model_on_the_test_images(sweep, tmp_path, backbone):
    from benchmark.evaluation.export import EXPORT, EXPORTS, Runner, export_run, test_images
    from benchmark.evaluation.inference import load_model
    from benchmark.runs.rundir import read_config

    run = _copy_run(sweep, f"{backbone}-32px", tmp_path)
    # ONNX and LiteRT where the [export] extra is installed (CI installs [test] only: SavedModel there)
    formats = ["savedmodel"] + [f for f, modules in (("onnx", ("onnxruntime", "tf2onnx")),
                                                     ("litert", ("ai_edge_litert",)))
                                if all(importlib.util.find_spec(m) for m in modules)]
    for fmt in formats:
        record = export_run(run, fmt, log=lambda line: None)
        assert record["max_abs_diff"] <= 1e-4 and record["checked_images"] > 0 and record["bytes"] > 0
    recorded = json.loads((run / EXPORT / EXPORTS).read_text())
    assert sorted(recorded) == sorted(formats)
    card = json.loads((run / "model_card.json").read_text())  # the card lists the exports
    assert sorted(card["speed"]["exports"]) == sorted(formats)
    # the check, redone here by hand on the saved files: the same images through Keras and through each export
    cfg = read_config(run)
    images = test_images(run, cfg)
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 1)
    expected = load_model(run, 5).predict(images, verbose=0)
    for fmt in formats:
        got = Runner(fmt, recorded[fmt]["file"])(images)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4
        # within 1e-5: the Keras model itself varies by ~1e-6 from one call to the next (threads)
        assert np.isclose(np.abs(got - expected).max(), recorded[fmt]["max_abs_diff"], atol=1e-5)


@pytest.mark.slow
def test_an_export_that_differs_is_refused_naming_the_largest_difference(sweep, tmp_path, monkeypatch):
    from benchmark.evaluation import export

    run = _copy_run(sweep, "mobilenet-32px", tmp_path)
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # every difference, even 0, is too large
    with pytest.raises(UserError) as err:
        export.export_run(run, "savedmodel", log=lambda line: None)
    assert "differs from the Keras model by" in str(err.value) and "label " in str(err.value)
    assert "it was not written" in str(err.value)
    assert not any((run / export.EXPORT).glob("model.savedmodel*"))  # nothing left, not even the temporary one


def test_a_missing_converter_is_one_line_with_the_pip_hint(monkeypatch):
    from benchmark.evaluation import export

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(UserError) as err:
        export.check_packages("onnx")
    message = str(err.value)
    assert "pip install tf2onnx" in message and len(message.splitlines()) == 1
    export.check_packages("savedmodel")  # TensorFlow alone


def test_export_never_replaces_a_file_it_did_not_make(tmp_path):
    from benchmark.evaluation.export import _target

    mine = tmp_path / "mine.onnx"
    mine.write_text("a user's file")
    with pytest.raises(UserError, match="choose another --out"):
        _target(tmp_path / "run", "onnx", mine)
    assert mine.read_text() == "a user's file"

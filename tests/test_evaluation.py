"""`evaluate` (TenCrop) and `predict` (probabilities, findings, Grad-CAM) on a trained run of the shared sweep."""

import json
import os

import pytest

from tests.helpers import COMPETITION5 as LABELS
from tests.helpers import NIH_SAMPLE, TEST_DATA, run_cli

pytestmark = pytest.mark.slow


def test_evaluate_with_tta_and_predict(sweep, tmp_path):
    out, _ = sweep
    run = out / "runs" / "resnet34-32px"
    result = run_cli("evaluate", "--run", run, "--tta")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "predictions_test_tta.csv").is_file()
    assert "test_tta" in json.loads((run / "metrics.json").read_text())
    images = [TEST_DATA / "nih" / "00000100_000.png", TEST_DATA / "nih" / "00000100_000_full_rgba.png"]
    if NIH_SAMPLE.is_dir():
        images.append(sorted((NIH_SAMPLE / "images").glob("*.png"))[10])
    result = run_cli("predict", "--run", run, *images, "--gradcam", tmp_path / "cams", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    out_json = json.loads(result.stdout)
    assert len(out_json) == len(images)
    for entry in out_json:
        assert set(entry["probabilities"]) == set(LABELS)
        assert all(0 <= v <= 1 for v in entry["probabilities"].values())
        assert entry["gradcam"] and all(os.path.isfile(f) for f in entry["gradcam"].values())
    assert run_cli("predict", "--run", run, tmp_path / "missing.png").returncode == 2


@pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not beside this checkout")
def test_a_run_trained_on_the_phantom_scored_on_the_real_nih_sample(sweep, tmp_path):
    import shutil

    import numpy as np
    import pandas as pd
    from sklearn import metrics as skm

    out, _ = sweep
    run = tmp_path / "run"
    shutil.copytree(out / "runs" / "mobilenet-32px", run, ignore=shutil.ignore_patterns(".lock"))
    result = run_cli("evaluate", "--run", run, "--dataset", "nih", "--data-root", NIH_SAMPLE)
    assert result.returncode == 0, result.stderr[-2000:]
    ext = run / "external" / "nih"
    record = json.loads((ext / "metrics.json").read_text())
    assert record["source"]["labels"]["Pleural Effusion"] == "Effusion"  # one label space
    assert record["source"]["images"] == 421 and set(record["test"]["summary"]["labels"]) == set(LABELS)
    own = json.loads((run / "metrics.json").read_text())["test"]
    assert set(record["test"]) == set(own) and set(record["test"]["summary"]) == set(own["summary"])
    pred = pd.read_csv(ext / "predictions.csv")
    assert list(pred.columns) == list(pd.read_csv(run / "predictions_test.csv", nrows=0).columns)
    assert {"M", "F"} == set(pred["sex"].dropna()) and pred["age"].notna().all()
    for lab in LABELS:
        expected = skm.roc_auc_score(pred[f"y_true_{lab}"], pred[f"y_prob_{lab}"])
        assert record["test"]["per_label"][lab]["auroc"] == pytest.approx(expected)
    assert record["test"]["summary"]["unit"] == "image"  # NIH has no studies of several views
    groups = record["test"]["subgroups"]
    assert {"sex", "age", "view"} <= set(groups) and groups["sex"]["F"]["n"] == int((pred["sex"] == "F").sum())
    # the report shows internal against external AUROC
    assert run_cli("report", "--sweep", run, "--bootstrap", "50").returncode == 0
    html = (run / "report" / "index.html").read_text()
    assert "External validation: nih" in html and np.isfinite(record["test"]["summary"]["auroc_macro"])

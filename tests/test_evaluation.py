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

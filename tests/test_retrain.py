"""`retrain`: some runs of a sweep trained again with overrides, the previous runs kept aside, the report rebuilt
with the new ones, and the sweep still resuming afterwards."""

import json
import shutil

import pandas as pd
import pytest

from tests.helpers import one_line_error, run_cli

pytestmark = pytest.mark.slow


def test_retrain_one_run_keeps_the_previous_and_the_report_shows_the_new(sweep, tmp_path):
    out, _ = sweep
    copy = tmp_path / "sweep"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns(".lock"))
    one_line_error(run_cli("retrain", "--sweep", copy, "densenet121-32px"), "has no run 'densenet121-32px'")
    one_line_error(run_cli("retrain", "--sweep", copy, "mobilenet-32px", "--set", "backbone=resnet50"),
                   "cannot change backbone")
    result = run_cli("retrain", "--sweep", copy, "mobilenet-32px", "--set", "epochs=1", "--set", "gradcam_images=0")
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]  # the 16 px runs failed before
    run = copy / "runs" / "mobilenet-32px"
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    assert "epochs: 1" in (run / "config.yaml").read_text()
    record = json.loads((run / "retrain.json").read_text())
    assert record["overrides"] == {"epochs": 1, "gradcam_images": 0}
    previous = copy / "runs" / record["previous"]
    assert (previous / "model.keras").is_file() and "epochs: 2" in (previous / "config.yaml").read_text()
    summary = pd.read_csv(copy / "report" / "summary.csv").set_index("run")
    assert summary.loc["mobilenet-32px", "epochs"] == 1 and record["previous"] not in summary.index
    again = run_cli("sweep", "--config", copy / "sweep.yaml", "--out", copy)  # the sweep still resumes
    assert "mobilenet-32px: finished earlier, skipped" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]

"""The sweep: each run in its own process, failures recorded while the others go on, resume after kill -9."""

import json
import time

import pandas as pd
import pytest

from tests.helpers import CI_PROFILE, kill_9_when, run_cli

pytestmark = pytest.mark.slow


def test_sweep_finishes_the_others_and_reports_the_failure(sweep):
    out, result = sweep
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # something failed
    summary = pd.read_csv(out / "report" / "summary.csv")
    status = dict(zip(summary["run"], summary["status"]))
    assert status == {"mobilenet-32px": "done", "resnet34-32px": "done", "mobilenet-16px": "failed",
                      "resnet34-16px": "failed"}
    errors = summary.set_index("run")["error"]
    assert "too small for mobilenet" in errors["mobilenet-16px"]
    assert "[4/4]" in result.stdout and "FAILED" in result.stdout and "report:" in result.stdout
    assert "on GPU 1" in result.stdout  # the second slot was used


def test_sweep_killed_and_resumed_does_not_redo_finished_runs(phantom, tmp_path):
    args = ["sweep", "--config", CI_PROFILE, "--out", tmp_path, "--data-root", phantom,
            "--set", "epochs=3", "--set", "steps_per_epoch=3", "--set", "gradcam_images=0",
            "--set", "early_stopping_patience=10"]
    first = tmp_path / "runs" / "mobilenet" / "status.json"
    kill_9_when(args, tmp_path / "runs" / "resnet34" / "checkpoint" / "state.json", epochs_done=1, timeout=400)
    assert json.loads(first.read_text())["status"] == "done"
    assert json.loads((tmp_path / "runs" / "resnet34" / "status.json").read_text())["status"] != "done"
    finished_model = (tmp_path / "runs" / "mobilenet" / "model.keras").stat().st_mtime_ns
    time.sleep(1)  # the child dies with the sweep; give it a moment
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "mobilenet: finished earlier, skipped" in result.stdout
    assert (tmp_path / "runs" / "mobilenet" / "model.keras").stat().st_mtime_ns == finished_model
    hist = pd.read_csv(tmp_path / "runs" / "resnet34" / "history.csv")
    assert hist["epoch"].tolist() == [0, 1, 2]
    assert "resuming" in (tmp_path / "runs" / "resnet34" / "train.log").read_text()

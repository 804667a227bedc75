"""The sweep: each run in its own process, failures recorded while the others go on, a changed profile refused,
SIGTERM and resume, hung runs and full disks."""

import json

import pandas as pd
import pytest

from tests.helpers import CI_PROFILE, run_cli

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
    # progress lines come from each run's progress.json, not from Keras's printed output
    assert "[1 mobilenet-32px] epoch 2/2  loss" in result.stdout and "Epoch 1/2" not in result.stdout
    progress = json.loads((out / "runs" / "mobilenet-32px" / "progress.json").read_text())
    assert progress["epoch"] == 2 and 0 <= progress["val_auroc"] <= 1


def test_a_changed_profile_into_the_same_folder_is_refused_before_anything_is_touched(sweep):
    from tests.helpers import one_line_error, tree_state

    out, _ = sweep
    before = tree_state(out)
    phantom = json.loads((out / "fingerprint.json").read_text())["config"]["data_root"]
    result = run_cli("sweep", "--config", CI_PROFILE, "--out", out, "--data-root", phantom,
                     "--set", "image_sizes=[32, 16]", "--set", "name=<b>escaped</b>", "--gpus", "0,1",
                     "--set", "epochs=3", "--set", "policy=zeros")
    err = one_line_error(result, "holds a sweep of other settings", "epochs 2 -> 3", "policy 'mixed' -> 'zeros'",
                         "python -m benchmark retrain --sweep")
    assert "new --out" in err
    assert tree_state(out) == before  # sweep.yaml, runs and report as they were


def test_two_writers_are_refused_sigterm_stops_the_runs_and_the_same_command_resumes(phantom, tmp_path):
    """Two runs: the first finishes, the second is stopped by SIGTERM (a scheduler ending the job) after an epoch;
    the same command skips the finished run and resumes the other after its last finished epoch."""
    import signal

    from tests.helpers import one_line_error, start_cli, wait_for_epochs

    args = ["sweep", "--config", CI_PROFILE, "--out", tmp_path, "--data-root", phantom, "--set", "epochs=3",
            "--set", "steps_per_epoch=3", "--set", "gradcam_images=0", "--set", "early_stopping_patience=10"]
    run = tmp_path / "runs" / "resnet34"
    proc = start_cli(*args)
    try:
        wait_for_epochs(proc, run / "checkpoint" / "state.json", 1, timeout=300)
        assert proc.poll() is None, "the sweep ended before it could be stopped"
        one_line_error(run_cli(*args), f"is in use by another sweep (process {proc.pid} on host ")
        one_line_error(run_cli("train", "--config", run / "requested.yaml", "--out", run), "is in use by another")
        proc.send_signal(signal.SIGTERM)  # a scheduler ending the job
        assert proc.wait(timeout=120) == 130
    finally:
        proc.kill()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted", status
    finished = tmp_path / "runs" / "mobilenet" / "model.keras"
    assert json.loads((finished.parent / "status.json").read_text())["status"] == "done"
    finished_at = finished.stat().st_mtime_ns
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "mobilenet: finished earlier, skipped" in result.stdout
    assert finished.stat().st_mtime_ns == finished_at  # not redone
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]  # no epoch lost or repeated
    assert "resuming" in (run / "train.log").read_text()


def test_a_hung_run_is_stopped_by_run_timeout_a_full_disk_is_recorded_and_the_sweep_goes_on(phantom, tmp_path):
    from tests.helpers import fault_env

    result = run_cli("sweep", "--config", CI_PROFILE, "--out", tmp_path, "--data-root", phantom,
                     "--set", "epochs=2", "--set", "steps_per_epoch=2", "--set", "gradcam_images=0",
                     "--set", "run_timeout=45", env=fault_env(hang="runs/mobilenet", disk_full="epoch-0001"))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("run")
    assert summary.loc["mobilenet", "status"] == "failed"
    assert "stopped after run_timeout=45 s without finishing" in summary.loc["mobilenet", "error"]
    assert summary.loc["resnet34", "status"] == "failed"
    assert "no space left on the device holding" in summary.loc["resnet34", "error"]
    assert "Traceback" not in (tmp_path / "runs" / "resnet34" / "train.log").read_text()
    assert "run                          status" in result.stdout  # the summary at the end

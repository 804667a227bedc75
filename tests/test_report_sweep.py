"""The sweep (each run in its own process, failures recorded, resume) and the report built from run files."""

import json
import os
import shutil
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from tests.conftest import NIH_SAMPLE, ROOT, TEST_DATA, kill_9_when, run_cli

pytestmark = pytest.mark.slow
LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


@pytest.fixture(scope="module")
def sweep(phantom, tmp_path_factory):
    """Two backbones, and a broken run for each (an image size too small for the network); two at a time, as
    on two GPUs (without GPUs the slots only set CUDA_VISIBLE_DEVICES)."""
    out = tmp_path_factory.mktemp("sweep")
    result = run_cli("sweep", "--config", ROOT / "configs" / "ci.yaml", "--out", out, "--data-root", phantom,
                     "--set", "image_sizes=[32, 16]", "--set", "name=<b>escaped</b>", "--gpus", "0,1")
    return out, result


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


def test_summary_columns_equal_sklearn_on_the_prediction_files(sweep):
    out, _ = sweep
    summary = pd.read_csv(out / "report" / "summary.csv").set_index("run")
    required = ["backbone", "status", "test_auroc_macro", "test_auroc_macro_ci_low", "test_auroc_macro_ci_high",
                "test_auprc_macro", "test_f1_macro", "test_f1_micro", "test_hamming_loss", "test_subset_accuracy",
                "params", "train_images_per_s", "inference_ms_per_image"] + [f"test_auroc_{lab}" for lab in LABELS]
    assert set(required) <= set(summary.columns)
    run = out / "runs" / "mobilenet-32px"
    pred = pd.read_csv(run / "predictions_test.csv")
    thresholds = json.loads((run / "thresholds.json").read_text())["thresholds"]
    aurocs, f1s = [], []
    flat_y, flat_pred = [], []
    for lab in LABELS:
        keep = pred[f"y_true_{lab}"].notna()
        y, p = pred.loc[keep, f"y_true_{lab}"].astype(int), pred.loc[keep, f"y_prob_{lab}"]
        hard = (p >= thresholds[lab]["f1"]).astype(int)
        if y.nunique() == 2:
            aurocs.append(skm.roc_auc_score(y, p))
            assert summary.loc["mobilenet-32px", f"test_auroc_{lab}"] == pytest.approx(aurocs[-1])
        f1s.append(skm.f1_score(y, hard, zero_division=0))
        flat_y += y.tolist()
        flat_pred += hard.tolist()
    row = summary.loc["mobilenet-32px"]
    assert row["test_auroc_macro"] == pytest.approx(np.mean(aurocs))
    assert row["test_f1_macro"] == pytest.approx(np.mean(f1s))
    assert row["test_f1_micro"] == pytest.approx(skm.f1_score(flat_y, flat_pred))
    assert row["test_hamming_loss"] == pytest.approx(skm.hamming_loss(flat_y, flat_pred))
    assert row["test_auroc_macro_ci_low"] <= row["test_auroc_macro"] <= row["test_auroc_macro_ci_high"]


def test_report_html_has_every_part_and_escapes(sweep):
    out, _ = sweep
    html = (out / "report" / "index.html").read_text()
    assert 'id="synthetic-banner"' in html and "SYNTHETIC DATA" in html
    for part in ("test mean AUROC (95% CI)", "vs best", "Hamming loss", "ROC curves", "Precision-recall curves",
                 "Calibration", "Accuracy, speed and size", "AUROC by label", "Grad-CAM", "Failed or unfinished runs",
                 "too small for mobilenet"):
        assert part in html, part
    assert html.count("data:image/png;base64,") >= 6  # self-contained: figures embedded
    assert "<b>escaped</b>" not in html and "&lt;b&gt;escaped&lt;/b&gt;" in html
    run_page = (out / "report" / "mobilenet-32px.html").read_text()
    assert "Confusion matrices" in run_page and "SYNTHETIC DATA" in run_page
    assert json.loads((out / "report" / "summary.json").read_text())["runs"]


def test_report_rebuilds_from_files_alone(sweep, tmp_path):
    out, _ = sweep
    copy = tmp_path / "copy"
    shutil.copytree(out / "runs", copy / "runs", ignore=shutil.ignore_patterns("*.keras", "checkpoint"))
    result = run_cli("report", "--sweep", copy, "--bootstrap", "50")
    assert result.returncode == 0, result.stderr
    assert (copy / "report" / "index.html").is_file()
    single = run_cli("report", "--sweep", copy / "runs" / "resnet34-32px", "--bootstrap", "50")
    assert single.returncode == 0 and (copy / "runs" / "resnet34-32px" / "report" / "index.html").is_file()


def test_report_in_headless_chromium(sweep, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        pytest.skip("no Chromium installed (.ci/run installs Debian's chromium)")
    out, _ = sweep
    shot = tmp_path / "report.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1366,2400", f"--screenshot={shot}",
           "--enable-logging=stderr", "--v=0", (out / "report" / "index.html").as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 50_000, result.stderr[-2000:]
    assert "Uncaught" not in result.stderr and "ERR_FILE_NOT_FOUND" not in result.stderr
    import cv2

    img = cv2.imread(str(shot))
    assert img.shape[0] >= 2000 and img.std() > 20  # tables and figures drawn, not a blank page
    red = (img[:60, :, 2] > 150) & (img[:60, :, 1] < 60)
    assert red.mean() > 0.3  # the red synthetic-data banner across the top


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


def test_sweep_killed_and_resumed_does_not_redo_finished_runs(phantom, tmp_path):
    args = ["sweep", "--config", ROOT / "configs" / "ci.yaml", "--out", tmp_path, "--data-root", phantom,
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

"""The report, built from run files alone: summary numbers against scikit-learn, every part of the page, escaping,
rebuilding without models, the page in headless Chromium."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

from tests.helpers import COMPETITION5 as LABELS
from tests.helpers import run_cli

pytestmark = pytest.mark.slow


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
    for part in ("test mean AUROC (95% CI)", "vs reference", "Hamming loss", "ROC curves", "Precision-recall curves",
                 "Calibration", "Accuracy, speed and size", "AUROC by label", "Grad-CAM", "Failed or unfinished runs",
                 "too small for mobilenet"):
        assert part in html, part
    assert html.count("data:image/png;base64,") >= 6  # self-contained: figures embedded
    assert "<b>escaped</b>" not in html and "&lt;b&gt;escaped&lt;/b&gt;" in html
    run_page = (out / "report" / "mobilenet-32px.html").read_text()
    assert "confusion (TN FP / FN TP)" in run_page and "Subgroups (test)" in run_page and "SYNTHETIC DATA" in run_page
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


def _copy_sweep(out, dest):
    shutil.copytree(out, dest, ignore=shutil.ignore_patterns("*.keras", "checkpoint", ".lock", "report"))
    return dest


def test_the_report_shows_only_the_runs_of_the_current_plan(sweep, tmp_path):
    out, _ = sweep
    copy = _copy_sweep(out, tmp_path / "copy")
    shutil.copytree(copy / "runs" / "mobilenet-32px", copy / "runs" / "densenet121-32px")  # an old grid's run
    result = run_cli("report", "--sweep", copy, "--bootstrap", "50")
    assert result.returncode == 0, result.stderr
    html = (copy / "report" / "index.html").read_text()
    assert "mobilenet-32px" in html and "densenet121-32px" not in html
    assert set(pd.read_csv(copy / "report" / "summary.csv")["run"]) == {"mobilenet-32px", "resnet34-32px",
                                                                        "mobilenet-16px", "resnet34-16px"}


def test_the_report_embeds_only_its_own_files(sweep, tmp_path):
    out, _ = sweep
    copy = _copy_sweep(out, tmp_path / "copy")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not for the report")
    run = copy / "runs" / "resnet34-32px"
    gallery = json.loads((run / "gradcam" / "gallery.json").read_text())
    gallery += [dict(gallery[0], file=str(secret)), dict(gallery[0], file="../../../secret.png"),
                dict(gallery[0], file="../report/x.png")]
    (run / "gradcam" / "gallery.json").write_text(json.dumps(gallery))
    assert run_cli("report", "--sweep", copy, "--bootstrap", "50").returncode == 0
    import base64

    leaked = base64.b64encode(secret.read_bytes()).decode()
    for page in (copy / "report").glob("*.html"):
        assert leaked not in page.read_text()


def test_a_public_report_holds_no_paths_ids_or_radiographs(sweep, tmp_path):
    out, _ = sweep
    copy = _copy_sweep(out, tmp_path / "copy")
    result = run_cli("report", "--sweep", copy, "--public", "--bootstrap", "50")
    assert result.returncode == 0, result.stderr
    public = copy / "report-public"
    text = "".join(p.read_text() for p in public.iterdir() if p.suffix in (".html", ".csv", ".json"))
    assert 'id="public-banner"' in text and "no file paths" in text
    assert str(tmp_path) not in text and "/tmp/" not in text  # no absolute paths (data root, errors)
    assert "patient0" not in text and ".jpg" not in text  # no image paths or patient ids
    assert all('class="gallery"' not in p.read_text() for p in public.glob("*.html"))  # no radiographs
    assert (public / "summary.csv").is_file()


def test_every_pair_is_compared_with_holm_adjusted_p_and_a_reference_chosen_on_validation(sweep):
    from benchmark.evaluation.scoring import score_units
    from benchmark.evaluation.stats import delong

    out, _ = sweep
    summary = json.loads((out / "report" / "summary.json").read_text())
    runs = {r["run"]: r for r in summary["runs"] if r["status"] == "done"}
    assert summary["reference"] == max(runs, key=lambda n: runs[n]["val_auroc_macro"])  # never chosen on test
    comparisons = summary["comparisons"]
    macro = [c for c in comparisons if c["label"] == "macro"]
    assert len(macro) == 1 and {macro[0]["a"], macro[0]["b"]} == set(runs)
    a, b = macro[0]["a"], macro[0]["b"]
    assert macro[0]["diff"] == pytest.approx(runs[a]["test_auroc_macro"] - runs[b]["test_auroc_macro"])
    assert macro[0]["test"] == "patient bootstrap" and macro[0]["p_holm"] == macro[0]["p"]  # a family of one
    assert macro[0]["family"] == "primary" and macro[0]["p"] > 0 and macro[0]["resamples"] > 0
    scored = {}
    for name in (a, b):
        frame = pd.read_csv(out / "runs" / name / "predictions_test.csv")
        y = frame[[f"y_true_{lab}" for lab in LABELS]].to_numpy(float)
        p = frame[[f"y_prob_{lab}" for lab in LABELS]].to_numpy(float)
        scored[name] = score_units(frame, y, p, "study", "max")  # the phantom is scored per study
    per_label = [c for c in comparisons if c["label"] != "macro"]
    assert per_label and all(c["p_holm"] >= c["p"] and c["family"] == "exploratory" for c in per_label)
    for c in per_label:
        j = LABELS.index(c["label"])
        y = scored[a].truth[:, j]
        keep = ~np.isnan(y)
        expected = (skm.roc_auc_score(y[keep], scored[a].probs[keep, j])
                    - skm.roc_auc_score(y[keep], scored[b].probs[keep, j]))
        assert c["diff"] == pytest.approx(expected)
        clustered = len(set(scored[a].patients)) < len(scored[a].patients)  # a patient with several studies
        assert c["test"] == ("patient bootstrap" if clustered else "delong")
        if c["test"] == "delong":
            assert c["p"] == pytest.approx(delong(y[keep], scored[a].probs[keep, j], scored[b].probs[keep, j])["p"])
    html = (out / "report" / "index.html").read_text()
    assert "Every pair of runs" in html and "reference" in html and "Protocol." in html
    assert "scored per <b>study (max over views)</b>" in html


def test_report_logs_runs_to_a_local_mlflow_store_read_back_with_its_client(sweep, tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="MLflow is the optional extra .[mlflow]")
    out, _ = sweep
    copy = _copy_sweep(out, tmp_path / "copy")
    result = run_cli("report", "--sweep", copy, "--mlflow", "--bootstrap", "50")
    assert result.returncode == 0, result.stderr[-2000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{copy / 'mlflow.db'}")
    name = yaml.safe_load((copy / "runs" / "mobilenet-32px" / "config.yaml").read_text())["name"]
    experiment = client.get_experiment_by_name(name)  # the sweep's name
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"mobilenet-32px", "resnet34-32px", "report"}  # the finished runs, and the report
    run = runs["mobilenet-32px"]
    assert run.data.params["backbone"] == "mobilenet" and run.data.params["epochs"] == "2"
    summary = pd.read_csv(copy / "report" / "summary.csv").set_index("run")
    assert run.data.metrics["test_auroc_macro"] == pytest.approx(summary.loc["mobilenet-32px", "test_auroc_macro"])
    history = pd.read_csv(copy / "runs" / "mobilenet-32px" / "history.csv")
    logged = client.get_metric_history(run.info.run_id, "val_auroc")
    assert [m.step for m in logged] == history["epoch"].tolist()
    assert [m.value for m in logged] == pytest.approx(history["val_auroc"].tolist())
    artifacts = {a.path for a in client.list_artifacts(runs["report"].info.run_id, "report")}
    assert {"report/index.html", "report/summary.csv", "report/summary.json"} <= artifacts
    again = run_cli("report", "--sweep", copy, "--mlflow", "--bootstrap", "50")  # nothing logged twice
    assert again.returncode == 0 and len(client.search_runs([experiment.experiment_id])) == 3

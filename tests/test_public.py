"""`report --public` is safe to publish: every path-typed and secret key (from the one declaration in
benchmark/config.py), the protocol texts and any string holding a data root are redacted, checked by searching
every file of report-public/ for the folders the test made."""

from __future__ import annotations

import json
import shutil

import yaml

from benchmark.config import KEYS, PATH_KEYS, SECRET_KEYS
from tests.helpers import run_cli


def test_public_report_names_no_folder_and_no_secret(sweep, tmp_path):
    out, _ = sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.keras", "checkpoint", ".lock", "report*"))
    data = tmp_path / "private-data"
    secret = "s3cr3t-token"
    run = next(p for p in (copy / "runs").iterdir() if (p / "metrics.json").is_file())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for name in PATH_KEYS:  # every path key set, whatever it is
        cfg[name] = ([{"dataset": "nih", "data_root": str(data / "nih"), "csv": str(data / "nih" / "labels.csv")}]
                     if KEYS[name].path_fields else str(data / name))
    cfg["mlflow"] = f"https://user:{secret}@mlflow.example/"
    cfg["ray_address"] = f"ray://{secret}@head:10001"
    cfg["weights"] = {"default": "imagenet", "resnet34": str(data / "weights" / "r34.weights.h5")}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["protocol"]["test"] = f"the rows of {data}/labels.csv whose split is test"  # a CSV data set's protocol
    (run / "metrics.json").write_text(json.dumps(metrics))

    result = run_cli("report", "--sweep", copy, "--public", "--bootstrap", "50")
    assert result.returncode == 0, result.stderr
    files = [p for p in (copy / "report-public").rglob("*") if p.is_file()]
    assert files
    for p in files:
        text = p.read_bytes().decode("utf-8", "replace")
        assert str(tmp_path) not in text and str(data) not in text, p.name
        assert secret not in text and "r34.weights.h5" not in text, p.name
    page = (copy / "report-public" / f"{run.name}.html").read_text()
    assert "&lt;redacted&gt;" in page or "<redacted>" in page
    assert SECRET_KEYS and all(KEYS[k].secret for k in SECRET_KEYS)

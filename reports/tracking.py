"""Logging runs to MLflow (an optional extra: `pip install -e .[mlflow]`): each finished run's parameters, its
per-epoch history, its final metrics and its report page; the report's files on a run of their own.

The default store is a SQLite file in the sweep folder (`mlflow.db`, artifacts in `mlflow-artifacts/`), so that
`mlflow ui --backend-store-uri sqlite:///SWEEP/mlflow.db` shows it with no server. Only one process writes to it:
the sweep's parent after each run, or `report --mlflow`. A run already logged with the same fingerprint is not
logged again (a retrained run is a new MLflow run).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from benchmark.errors import UserError

STORE = "mlflow.db"
ARTIFACTS = "mlflow-artifacts"
TAG_RUN = "cxr_bench.run"
TAG_FINGERPRINT = "cxr_bench.fingerprint"


def default_uri(sweep: Path) -> str:
    return f"sqlite:///{(Path(sweep) / STORE).resolve()}"


def _client(uri: str):
    try:
        import mlflow
    except ImportError:
        raise UserError("MLflow is not installed: pip install -e .[mlflow]") from None
    return mlflow, mlflow.MlflowClient(tracking_uri=uri)


def _experiment(client, name: str, sweep: Path) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=(Path(sweep) / ARTIFACTS).resolve().as_uri())


def _fingerprint(run_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("fingerprint.json", "metrics.json", "config.yaml"):
        path = run_dir / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _flat(prefix: str, values: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def log_runs(sweep, runs: list, uri: str | None = None, report_dir: Path | None = None,
             experiment: str | None = None) -> dict:
    """Log the finished runs (reports.runs.ReportRun, as load_run reads them) and the report's files; returns
    {"uri", "experiment_id", "logged": [run names], "skipped": [run names already logged]}."""
    from mlflow.entities import Metric, Param

    sweep = Path(sweep)
    uri = uri or default_uri(sweep)
    mlflow, client = _client(uri)
    exp_id = _experiment(client, experiment or sweep.resolve().name, sweep)
    logged, skipped = [], []
    for r in runs:
        if r.status != "done" or not r.test_metrics:
            continue
        fingerprint = _fingerprint(r.dir)
        existing = client.search_runs([exp_id], filter_string=f"tags.`{TAG_RUN}` = '{r.name}' and "
                                                                f"tags.`{TAG_FINGERPRINT}` = '{fingerprint}'")
        if existing:
            skipped.append(r.name)
            continue
        run = client.create_run(exp_id, run_name=r.name, tags={TAG_RUN: r.name, TAG_FINGERPRINT: fingerprint,
                                                               "cxr_bench.synthetic": str(r.synthetic)})
        run_id = run.info.run_id
        params = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
                  for k, v in sorted((r.config or {}).items())]
        metrics = []
        if r.history is not None:
            for row in r.history.to_dict(orient="records"):
                step = int(row.get("epoch", 0))
                for key, value in _flat("", {k: v for k, v in row.items() if k != "epoch"}).items():
                    metrics.append(Metric(key, float(value), 0, step))
        summary = _flat("test_", r.test_metrics["summary"])
        if r.val_metrics:
            summary.update(_flat("val_", r.val_metrics["summary"]))
        for label in r.labels:
            auc = r.test_metrics["per_label"][label].get("auroc")
            if auc is not None:
                summary[f"test_auroc.{label}"] = auc
        summary.update(_flat("", r.timing or {}))
        metrics += [Metric(k, float(v), 0, 0) for k, v in summary.items()]
        for start in range(0, max(len(params), len(metrics)), 500):  # MLflow's batch limits
            client.log_batch(run_id, params=params[start:start + 100] if start < len(params) else [],
                             metrics=metrics[start:start + 500])
        for start in range(100, len(params), 100):
            client.log_batch(run_id, params=params[start:start + 100])
        for name in ("metrics.json", "config.yaml", "history.csv"):
            if (r.dir / name).is_file():
                client.log_artifact(run_id, str(r.dir / name))
        if report_dir is not None and (report_dir / f"{r.name}.html").is_file():
            client.log_artifact(run_id, str(report_dir / f"{r.name}.html"), "report")
        client.set_terminated(run_id)
        logged.append(r.name)
    if report_dir is not None and report_dir.is_dir():
        found = client.search_runs([exp_id], filter_string=f"tags.`{TAG_RUN}` = 'report'")
        run_id = found[0].info.run_id if found else client.create_run(
            exp_id, run_name="report", tags={TAG_RUN: "report"}).info.run_id
        for name in ("index.html", "summary.csv", "summary.json"):
            if (report_dir / name).is_file():
                client.log_artifact(run_id, str(report_dir / name), "report")
        client.set_terminated(run_id)
    return {"uri": uri, "experiment_id": exp_id, "logged": logged, "skipped": skipped}

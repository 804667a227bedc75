"""`python -m benchmark report`: the comparison page, one page per run, summary.csv and summary.json, rebuilt
from the files of the run directories alone (no retraining, no TensorFlow)."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmark.errors import UserError
from benchmark.rundir import atomic_write_text, read_json, read_status, write_json
from reports import plots
from reports.metrics import compute_metrics, paired_bootstrap
from reports.references import references_for

SUMMARY_COLUMNS = ["run", "backbone", "status", "policy", "finetune", "image_size", "seed", "loss", "weights",
                   "test_auroc_macro", "test_auroc_macro_ci_low", "test_auroc_macro_ci_high", "test_auroc_micro",
                   "test_auprc_macro", "test_f1_macro", "test_f1_micro", "test_hamming_loss", "test_subset_accuracy",
                   "test_accuracy_macro", "test_precision_macro", "test_recall_macro", "test_specificity_macro",
                   "test_ece_macro", "test_brier_macro", "val_auroc_macro", "params", "flops",
                   "train_images_per_s", "inference_ms_per_image", "train_seconds", "epochs", "best_epoch",
                   "vs_best_diff", "vs_best_p", "error"]


def find_runs(path: Path) -> tuple[list[Path], Path]:
    """Run directories under a sweep folder (or the folder itself if it is one run), and where the report goes."""
    if (path / "config.yaml").is_file() or (path / "requested.yaml").is_file():
        return [path], path / "report"
    runs_dir = path / "runs" if (path / "runs").is_dir() else path
    runs = sorted(p for p in runs_dir.iterdir() if p.is_dir() and
                  ((p / "config.yaml").is_file() or (p / "requested.yaml").is_file() or (p / "status.json").is_file()))
    if not runs:
        raise UserError(f"{path} holds no run directories (folders with config.yaml); pass a sweep or run folder")
    return runs, path / "report"


def _truth_probs(frame: pd.DataFrame, labels) -> tuple[np.ndarray, np.ndarray]:
    y = frame[[f"y_true_{lab}" for lab in labels]].to_numpy(dtype=float, na_value=np.nan)
    p = frame[[f"y_prob_{lab}" for lab in labels]].to_numpy(dtype=float)
    return y, p


def load_run(run_dir: Path, n_boot: int) -> dict:
    """Everything the report shows about one run, read from its files; metrics recomputed from predictions."""
    cfg_file = run_dir / "config.yaml" if (run_dir / "config.yaml").is_file() else run_dir / "requested.yaml"
    cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else {}
    status = read_status(run_dir)
    run = {"name": run_dir.name, "dir": run_dir, "config": cfg, "status": status.get("status", "missing"),
           "error": status.get("error"), "timing": read_json(run_dir / "timing.json", {}) or {},
           "environment": read_json(run_dir / "environment.json", {}) or {},
           "synthetic": bool(status.get("synthetic", cfg.get("dataset") == "phantom"))}
    hist = run_dir / "history.csv"
    run["history"] = pd.read_csv(hist) if hist.is_file() and hist.stat().st_size else None
    pred_test = run_dir / "predictions_test.csv"
    if run["status"] != "done" or not pred_test.is_file():
        return run
    thresholds = read_json(run_dir / "thresholds.json", {})
    labels = thresholds.get("labels") or [c[len("y_prob_"):] for c in pd.read_csv(pred_test, nrows=0).columns
                                          if c.startswith("y_prob_")]
    run["labels"] = labels
    run["thresholds"] = thresholds.get("thresholds")
    for split in ("val", "test"):
        path = run_dir / f"predictions_{split}.csv"
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        y, p = _truth_probs(frame, labels)
        run[f"{split}_frame"] = frame
        run[f"{split}_y"], run[f"{split}_p"] = y, p
        run[f"{split}_metrics"] = compute_metrics(y, p, labels, frame["patient"].astype(str).to_numpy(),
                                                  run["thresholds"], n_boot=n_boot if split == "test" else 0,
                                                  seed=int(cfg.get("seed", 0) or 0))
    gallery = read_json(run_dir / "gradcam" / "gallery.json")
    run["gallery"] = gallery or []
    return run


def summary_row(run: dict) -> dict:
    cfg, timing = run["config"], run["timing"]
    row = {"run": run["name"], "backbone": cfg.get("backbone"), "status": run["status"],
           "policy": json.dumps(cfg.get("policy")) if isinstance(cfg.get("policy"), dict) else cfg.get("policy"),
           "finetune": cfg.get("finetune"), "image_size": cfg.get("image_size"), "seed": cfg.get("seed"),
           "loss": cfg.get("loss"), "weights": cfg.get("weights"), "error": run.get("error")}
    for key in ("params", "flops", "train_images_per_s", "inference_ms_per_image", "train_seconds", "epochs",
                "best_epoch"):
        row[key] = timing.get(key)
    m = run.get("test_metrics")
    if m:
        s = m["summary"]
        for key in ("auroc_macro", "auroc_micro", "auprc_macro", "f1_macro", "f1_micro", "hamming_loss",
                    "subset_accuracy", "accuracy_macro", "precision_macro", "recall_macro", "specificity_macro",
                    "ece_macro", "brier_macro"):
            row[f"test_{key}"] = s.get(key)
        ci = s.get("auroc_macro_ci") or [None, None]
        row["test_auroc_macro_ci_low"], row["test_auroc_macro_ci_high"] = ci
        for label in run["labels"]:
            row[f"test_auroc_{label}"] = m["per_label"][label].get("auroc")
    if run.get("val_metrics"):
        row["val_auroc_macro"] = run["val_metrics"]["summary"].get("auroc_macro")
    return row


def compare_to_best(runs: list[dict], n_boot: int) -> None:
    """Paired bootstrap of each run against the best (by test mean AUROC) on the images both predicted."""
    done = [r for r in runs if r.get("test_metrics") and r["test_metrics"]["summary"].get("auroc_macro") is not None]
    if len(done) < 2:
        return
    best = max(done, key=lambda r: r["test_metrics"]["summary"]["auroc_macro"])
    for r in done:
        r["is_best"] = r is best
        if r is best or r["labels"] != best["labels"]:
            continue
        a = r["test_frame"].set_index("path")
        b = best["test_frame"].set_index("path")
        common = a.index.intersection(b.index)
        if len(common) < 10:
            continue
        a, b = a.loc[common], b.loc[common]
        y, pa = _truth_probs(a.reset_index(), r["labels"])
        _, pb = _truth_probs(b.reset_index(), r["labels"])
        r["vs_best"] = paired_bootstrap(y, pa, pb, a["patient"].astype(str).to_numpy(), n_boot=n_boot)
        r["vs_best"]["best"] = best["name"]


def seed_groups(rows: list[dict]) -> list[dict]:
    """Runs that differ only in seed: mean and sd of test mean AUROC."""
    frame = pd.DataFrame([r for r in rows if r.get("test_auroc_macro") is not None])
    if frame.empty or frame["seed"].nunique() < 2:
        return []
    keys = ["backbone", "policy", "finetune", "image_size", "loss", "weights"]
    out = []
    for key, g in frame.groupby(keys, dropna=False):
        if len(g) > 1:
            out.append({**dict(zip(keys, key)), "runs": len(g), "mean": float(g["test_auroc_macro"].mean()),
                        "sd": float(g["test_auroc_macro"].std(ddof=1))})
    return out


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _file_b64(path: Path) -> str | None:
    return _b64(path.read_bytes()) if path.is_file() else None


def _pvalue(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def build_report(path, bootstrap: int | None = None) -> Path:
    """Write report/index.html, report/<run>.html, report/summary.csv and report/summary.json; return index."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; pass a sweep directory or a run directory")
    run_dirs, out = find_runs(path)
    n_boot = 1000 if bootstrap is None else bootstrap
    runs = [load_run(d, n_boot) for d in run_dirs]
    compare_to_best(runs, n_boot)
    rows = []
    for r in runs:
        row = summary_row(r)
        vs = r.get("vs_best")
        row["vs_best_diff"] = vs.get("diff") if vs else None
        row["vs_best_p"] = vs.get("p") if vs else None
        rows.append(row)
    label_cols = sorted({k for row in rows for k in row if k.startswith("test_auroc_") and k not in SUMMARY_COLUMNS},
                        key=lambda k: next((i for r in runs for i, lab in enumerate(r.get("labels", [])) if k == f"test_auroc_{lab}"), 99))
    summary = pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS + label_cols)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    write_json(out / "summary.json", {"runs": summary.replace({np.nan: None}).to_dict(orient="records")})

    done = [r for r in runs if r.get("test_metrics")]
    synthetic = any(r["synthetic"] for r in runs)
    labels = done[0]["labels"] if done else []
    dataset = (runs[0]["config"] or {}).get("dataset", "")
    figures = {}
    hists = {r["name"]: r["history"] for r in runs if r["history"] is not None}
    if hists:
        figures["curves"] = _b64(plots.training_curves(hists, synthetic))
    if done:
        pairs = {r["name"]: (r["test_y"], r["test_p"]) for r in done}
        figures["roc"] = _b64(plots.roc_curves(pairs, labels, synthetic))
        figures["pr"] = _b64(plots.pr_curves(pairs, labels, synthetic))
        figures["reliability"] = _b64(plots.reliability(pairs, labels, synthetic))
        table = pd.DataFrame({lab: [r["test_metrics"]["per_label"][lab].get("auroc") for r in done] for lab in labels},
                             index=[r["name"] for r in done]).astype(float)
        table["mean"] = table.mean(axis=1)
        figures["heatmap"] = _b64(plots.auroc_heatmap(table, synthetic))
        figures["efficiency"] = _b64(plots.efficiency([row for row in rows if row["status"] == "done"], synthetic))
    refs = references_for(dataset)
    gallery = _gallery(done)
    env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                      autoescape=select_autoescape(["html"]))
    env.filters["fmt"] = _fmt
    env.filters["pvalue"] = _pvalue
    first_cfg = next((r["config"] for r in runs if r["config"]), {})
    name = first_cfg.get("name") if first_cfg.get("name") not in (None, "run") else path.resolve().name
    context = {"title": f"cxr-bench report: {name}", "synthetic": synthetic, "runs": runs, "rows": rows,
               "labels": labels, "figures": figures, "refs": refs, "gallery": gallery, "seed_groups": seed_groups(rows),
               "dataset": dataset, "n_boot": n_boot, "environment": next((r["environment"] for r in runs if r["environment"]), {}),
               "config": first_cfg}
    atomic_write_text(out / "index.html", env.get_template("index.html").render(**context))
    for r in runs:
        atomic_write_text(out / f"{r['name']}.html", env.get_template("run.html").render(**_run_context(r, synthetic)))
    return out / "index.html"


def _gallery(done: list[dict]) -> list[dict]:
    """Rows of the Grad-CAM gallery: the same test image across every architecture."""
    by_image: dict = {}
    for r in done:
        for entry in r.get("gallery", []):
            by_image.setdefault(entry["image"], {"image": entry["image"], "true": entry["true_labels"], "cells": {}})
            by_image[entry["image"]]["cells"][r["name"]] = {
                "src": _file_b64(r["dir"] / "gradcam" / entry["file"]), "label": entry["label"],
                "probability": entry["probability"]}
    return [{**v, "cells": [v["cells"].get(r["name"]) for r in done], "runs": [r["name"] for r in done]}
            for v in by_image.values()]


def _run_context(r: dict, synthetic: bool) -> dict:
    ctx = {"title": f"cxr-bench run: {r['name']}", "run": r, "synthetic": synthetic, "figures": {},
           "config_text": yaml.safe_dump(r["config"], sort_keys=False) if r["config"] else "",
           "environment": r["environment"], "labels": r.get("labels", [])}
    if r["history"] is not None:
        ctx["figures"]["curves"] = _b64(plots.training_curves({r["name"]: r["history"]}, synthetic))
    if r.get("test_metrics"):
        pair = {r["name"]: (r["test_y"], r["test_p"])}
        labels = r["labels"]
        ctx["figures"]["roc"] = _b64(plots.roc_curves(pair, labels, synthetic))
        ctx["figures"]["pr"] = _b64(plots.pr_curves(pair, labels, synthetic))
        ctx["figures"]["confusion"] = _b64(plots.confusion_grid(r["test_metrics"]["per_label"], labels, "f1", synthetic))
        ctx["figures"]["reliability"] = _b64(plots.reliability(pair, labels, synthetic))
        ctx["gallery"] = [{**e, "src": _file_b64(r["dir"] / "gradcam" / e["file"])} for e in r.get("gallery", [])]
    return ctx


"""`python -m benchmark report`: the comparison page, one page per run, summary.csv and summary.json, rebuilt
from the files of the run directories alone (no retraining, no TensorFlow).

What the pages show is read from three lists: the metrics (`benchmark.evaluation.metrics.SUMMARY_METRICS`), the figures
(`reports.figures.FIGURES`) and the summary table's columns (`summary_columns`, built from the metrics).
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmark.errors import UserError
from benchmark.evaluation.compare import compare, comparison_matrix, configuration_key
from benchmark.evaluation.metrics import SUMMARY_METRICS
from benchmark.evaluation.stats import t_interval
from benchmark.runs import compat
from benchmark.runs.rundir import GRADCAM, atomic_write_text, json_text
from reports import figures as figs
from reports.public import known_roots, make_public, strip_roots
from reports.references import references_for
from reports.runs import ReportRun, find_runs, load_run
from reports.tuning import tuning_section, tuning_summary

RUN_COLUMNS = ["run", "backbone", "engine", "status", "policy", "finetune", "image_size", "seed", "loss", "weights", "protocol",
               "unit"]
TIMING_COLUMNS = ["params", "flops", "train_images_per_s", "inference_ms_per_image", "train_seconds", "epochs",
                  "best_epoch"]


def summary_columns() -> list[str]:
    """summary.csv's columns: the run, every test metric of SUMMARY_METRICS (with CI bounds), validation AUROC,
    timing, the comparison with the best run and the error; per-label AUROCs follow."""
    metric_cols = []
    for m in SUMMARY_METRICS:
        metric_cols.append(f"test_{m.key}")
        if m.ci:
            metric_cols += [f"test_{m.key}_ci_low", f"test_{m.key}_ci_high"]
    return (RUN_COLUMNS + metric_cols + ["val_auroc_macro", "vs_reference_diff", "vs_reference_p_holm"]
            + TIMING_COLUMNS + ["error"])


def summary_row(run: ReportRun) -> dict:
    cfg, timing = run.config, run.timing
    row = {"run": run.name, "backbone": cfg.get("backbone"), "engine": compat.engine(cfg),
           "status": run.status,
           "policy": json.dumps(cfg.get("policy")) if isinstance(cfg.get("policy"), dict) else cfg.get("policy"),
           "finetune": cfg.get("finetune"), "image_size": cfg.get("image_size"), "seed": cfg.get("seed"),
           "loss": cfg.get("loss"), "weights": json.dumps(cfg.get("weights")) if isinstance(cfg.get("weights"), dict)
           else cfg.get("weights"), "error": run.error,
           "protocol": (run.protocol or {}).get("name")}
    for key in TIMING_COLUMNS:
        row[key] = timing.get(key)
    m = run.test_metrics
    if m:
        s = m["summary"]
        row["unit"] = compat.unit(s)
        for metric in SUMMARY_METRICS:
            row[f"test_{metric.key}"] = s.get(metric.key)
            if metric.ci:
                row[f"test_{metric.key}_ci_low"], row[f"test_{metric.key}_ci_high"] = (
                    s.get(f"{metric.key}_ci") or [None, None])
        for label in run.labels:
            row[f"test_auroc_{label}"] = m["per_label"][label].get("auroc")
    if run.val_metrics:
        row["val_auroc_macro"] = run.val_metrics["summary"].get("auroc_macro")
    vs = run.vs_reference
    row["vs_reference_diff"] = vs.get("diff") if vs else None
    row["vs_reference_p_holm"] = vs.get("p_holm") if vs else None
    return row


def choose_reference(runs: list[ReportRun], matrix: dict, reference: str | None) -> str | None:
    """Each run gets its configuration's macro comparison against the reference configuration (the best on
    validation mean AUROC over its seeds, chosen by benchmark.evaluation.compare, never on test): configuration minus
    reference."""
    if reference is None:
        return None
    for r in runs:
        conf = r.configuration
        if conf is None:
            continue
        r.is_reference = conf == reference
        if conf != reference:
            r.vs_reference = matrix.get(conf, {}).get(reference)
    return reference


def seed_groups(rows: list[dict], runs: list[ReportRun] | None = None) -> list[dict]:
    """Runs that differ only in seed: the mean test mean AUROC with its 95 % t interval across seeds, beside the
    runs' mean bootstrap interval (resampling patients), so that a reader sees which spread is larger."""
    frame = pd.DataFrame([r for r in rows if r.get("test_auroc_macro") is not None])
    if frame.empty or frame["seed"].nunique() < 2:
        return []
    keys = ["backbone", "engine", "policy", "finetune", "image_size", "loss", "weights"]
    configs = {r.name: configuration_key(r.config) for r in runs or []}
    frame["configuration"] = [configs.get(name, name) for name in frame["run"]]
    out = []
    for _, g in frame.groupby("configuration", sort=False):  # the declared result keys minus the seed
        key = tuple(g.iloc[0][k] for k in keys)
        if len(g) > 1:
            values = g["test_auroc_macro"].astype(float)
            low, high = g["test_auroc_macro_ci_low"].astype(float), g["test_auroc_macro_ci_high"].astype(float)
            out.append({**dict(zip(keys, key)), "runs": len(g), "mean": float(values.mean()),
                        "sd": float(values.std(ddof=1)), "seed_ci": t_interval(values.tolist()),
                        "bootstrap_ci": [float(low.mean()), float(high.mean())] if low.notna().all() else None})
    return out


def subgroup_gaps(runs: list[dict]) -> list[dict]:
    """Per run and attribute, the largest gap between its groups (with numbers) in the per-finding false-negative
    rate and in mean AUROC, on the test split; every group averaged over the same labels (those scored in every
    group), so that a label present in one group only cannot make a gap."""
    out = []
    for r in runs:
        recorded = (r.get("test_metrics") or {}).get("subgroup_gaps")
        if recorded is not None:  # benchmark.evaluation.subgroups: with patient-bootstrap CIs
            out += [{"run": r["name"], "attribute": attribute, **gaps} for attribute, gaps in recorded.items()]
            continue
        groups = ((r.get("test_metrics") or {}).get("subgroups")) or {}
        for attribute, members in groups.items():
            scored = {g: m for g, m in members.items() if m.get("auroc_macro") is not None}
            row = {"run": r["name"], "attribute": attribute,
                   "groups": {g: {"n": m.get("n")} for g, m in scored.items()}}
            for kind, key in (("fnr", "fnr"), ("auroc", "auroc")):
                values = _common_means({g: m.get(key) for g, m in scored.items()})
                if values is None:
                    continue
                means, common = values
                order = sorted(means, key=means.get)
                hi, lo = order[-1], order[0]
                row[f"{kind}_gap"] = {"value": means[hi] - means[lo], "high": hi, "low": lo, "ci": None}
                row[f"{kind}_labels"] = common
            out.append(row)
    return out


def _common_means(per_group: dict):
    """Each group's mean over the labels every group has a value for, and those labels (None: fewer than two
    groups with per-label values, or no label in common)."""
    per_group = {g: v for g, v in per_group.items() if isinstance(v, dict) and v}
    if len(per_group) < 2:
        return None
    common = sorted(set.intersection(*(set(v) for v in per_group.values())))
    if not common:
        return None
    return {g: float(np.mean([v[lab] for lab in common])) for g, v in per_group.items()}, common


def external_tables(runs: list[dict]) -> list[dict]:
    """For each external test set: per run and shared label, the internal and the external test AUROC."""
    names = sorted({name for r in runs for name in r.get("external", {})})
    tables = []
    for name in names:
        rows, labels = [], []
        for r in runs:
            ext = r.get("external", {}).get(name)
            if not ext or not r.get("test_metrics"):
                continue
            shared = ext["test"]["summary"]["labels"]
            labels += [lab for lab in shared if lab not in labels]
            rows.append({"run": r["name"], "external": ext, "cells": {
                lab: (r["test_metrics"]["per_label"].get(lab, {}).get("auroc"),
                      ext["test"]["per_label"][lab].get("auroc")) for lab in shared},
                "macro": _shared_macros(r["test_metrics"], ext["test"], shared)})
        first = next((row["external"] for row in rows), {})
        tables.append({"name": name, "labels": labels, "rows": rows, "source": first.get("source", {}),
                       "protocol": first.get("protocol")})
    return tables


def _shared_macros(internal: dict, external: dict, shared) -> tuple:
    """The internal and external mean AUROC over the same labels: those both sets score (an internal macro over
    every trained label beside an external one over the shared labels would compare different averages)."""
    pairs = [(internal["per_label"].get(lab, {}).get("auroc"), external["per_label"].get(lab, {}).get("auroc"))
             for lab in shared]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return None, None
    return float(np.mean([a for a, _ in pairs])), float(np.mean([b for _, b in pairs]))


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


def build_figures(page: str, runs: list[ReportRun], labels, synthetic: bool) -> list[dict]:
    """The figures of one page kind, in FIGURES order: {key, title, note, src}."""
    out = []
    for fig in figs.FIGURES:
        if page not in fig.pages:
            continue
        chosen = [r for r in runs if r.test_metrics] if fig.needs_metrics else runs
        if not chosen:
            continue
        png = fig.build(chosen, labels, synthetic)
        if png:
            out.append({"key": fig.key, "title": fig.title, "note": fig.note, "src": _b64(png)})
    return out


def report_folder(path: Path, public: bool) -> Path:
    """The report's folder (report/, or report-public/), which must be missing, empty or a report of ours."""
    from benchmark.runs.ownership import claim

    folder = path / ("report-public" if public else "report")

    return claim(folder, "report", "a report folder", f"move it away from {path}")


def build_report(path, bootstrap: int | None = None, plan: list[str] | None = None, public: bool = False,
                 mlflow=None, min_positives: int | None = None) -> Path:
    """Write report/index.html, report/<run>.html, report/summary.csv and report/summary.json; return index.

    Only the runs of the sweep's current plan are shown. With `public`, the report goes to report-public/ and
    holds no absolute paths, image paths, patient ids or radiographs (no Grad-CAM), and says so. With `mlflow`
    (True for the sweep folder's SQLite store, or a tracking URI) the finished runs and the report's files are
    logged to MLflow (reports.tracking)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; pass a sweep directory or a run directory")
    run_dirs = find_runs(path, plan)
    out = report_folder(path, public)
    runs = [load_run(d, bootstrap or 1000) for d in run_dirs]
    roots = known_roots(path, runs) if public else []
    if public:
        make_public(runs)

    def emit(name: str, text: str) -> None:  # a public page gets a last pass for the folders it must not name
        atomic_write_text(out / name, strip_roots(text, roots) if public else text)
    n_boot = bootstrap if bootstrap is not None else recorded_bootstrap(runs)
    result = compare(runs, n_boot, min_positives if min_positives is not None else _min_positives(runs))
    comparisons = result.rows
    matrix = comparison_matrix([c.name for c in result.configurations], comparisons)
    reference = choose_reference(runs, matrix, result.reference)
    macro_over_supported(runs, result)
    rows = [summary_row(r) for r in runs]
    columns = summary_columns()
    label_cols = []
    for r in runs:
        label_cols += [f"test_auroc_{lab}" for lab in r.labels if f"test_auroc_{lab}" not in label_cols]
    summary = pd.DataFrame(rows).reindex(columns=columns + label_cols)
    emit("summary.csv", summary.to_csv(index=False))
    tuning = tuning_summary(path)  # a tuned sweep's trials, read from their folders (reports.tuning)
    emit("summary.json", json_text({
        "runs": summary.replace({np.nan: None}).to_dict(orient="records"), "reference": reference,
        "reference_chosen_on": "validation mean AUROC",
        "comparisons": [{k: c[k] for k in COMPARISON_KEYS if k in c} for c in comparisons],
        "configurations": {c.name: [r.name for r in c.runs] for c in result.configurations},
        "min_positives": result.min_positives, "label_support": result.support,
        **({"tuning": tuning} if tuning else {}),
        "data_differs": {r.name: r.data_differs for r in runs if r.data_differs},
        "protocols": {r.name: r.protocol for r in runs if r.protocol}}))

    done = [r for r in runs if r.test_metrics]
    synthetic = any(r.synthetic for r in runs)
    labels = done[0].labels if done else []
    dataset = (runs[0].config or {}).get("dataset", "")
    env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                      autoescape=select_autoescape(["html"]))
    env.filters["fmt"] = _fmt
    env.filters["pvalue"] = _pvalue
    first_cfg = next((r.config for r in runs if r.config), {})
    name = first_cfg.get("name") if first_cfg.get("name") not in (None, "run") else path.resolve().name
    table_metrics = [m for m in SUMMARY_METRICS if m.in_table]
    refs, refs_left = _references(dataset, done)
    compared = [c for c in result.configurations if matrix.get(c.name)]
    context = {"title": f"cxr-bench report: {name}", "synthetic": synthetic, "runs": runs, "rows": rows,
               "labels": labels, "figures": build_figures("index", runs, labels, synthetic),
               "refs": refs, "refs_left": refs_left, "gallery": _gallery(done), "seed_groups": seed_groups(rows, runs),
               "dataset": dataset, "n_boot": n_boot, "metrics": table_metrics, "public": public,
               "reference": reference, "matrix": matrix, "compared": compared,
               "per_label": [c for c in comparisons if c["label"] != "macro"], "comparison": result,
               "primary": [c for c in comparisons if c["family"] == "primary"],
               "pooled": any(c.seeds > 1 for c in result.configurations), **_support_context(result, done),
               "protocols": _protocols(done), "gaps": subgroup_gaps(done), "external": external_tables(done),
               "environment": next((r.environment for r in runs if r.environment), {}), "config": first_cfg}
    context["tuning"] = tuning_section(path, tuning, synthetic, result.configurations)
    emit("index.html", env.get_template("index.html").render(**context))
    for r in runs:
        emit(f"{r.name}.html", env.get_template("run.html").render(**_run_context(r, synthetic), public=public))
    if mlflow and not public:
        from reports.tracking import log_runs

        log_runs(path, runs, None if mlflow is True else str(mlflow), out, experiment=name)
    return out / "index.html"


COMPARISON_KEYS = ("a", "b", "label", "diff", "ci", "p", "p_holm", "test", "resamples", "family", "p_bh",
                   "p_resampled", "se", "seed_se", "seeds")


def macro_over_supported(runs: list[ReportRun], result) -> None:
    """A run's test mean AUROC (and its CI) over the labels with enough positives only, as its comparisons use
    (metrics.json from a run scored with a lower min_positives averages in rare labels)."""
    from benchmark.evaluation.stats import percentile_ci

    for group in result.support:
        kept = [lab for lab, s in group["labels"].items() if s["kept"]]
        for r in runs:
            if r.name not in group["runs"] or r.boot_macro is None or not kept:
                continue
            summary = r.test_metrics["summary"]
            per_label = r.test_metrics["per_label"]
            values = [per_label[lab].get("auroc") for lab in kept]
            if any(v is None for v in values):
                continue
            summary["auroc_macro"] = float(np.mean(values))
            summary["auroc_macro_ci"] = percentile_ci(r.boot_macro)
            summary["macro_labels"] = kept


def _support_context(result, done: list[ReportRun]) -> dict:
    """The label support of the largest test-set group: every label's counts, those left out, the scored unit."""
    group = max(result.support, key=lambda g: len(g["runs"]), default={"labels": {}})
    labels = group["labels"]
    return {"support_by_label": labels, "unit": compat.unit(done[0].test_metrics["summary"]) if done
            else "image", "support_left": [{"label": lab, **s} for lab, s in labels.items() if not s["kept"]]}


def _min_positives(runs: list[ReportRun]) -> int:
    """The runs' min_positives (config.yaml; 10 where a run predates the key)."""
    return compat.min_positives([r.config for r in runs])


def recorded_bootstrap(runs: list[ReportRun]) -> int:
    """The resamples the runs' own confidence intervals used (so that comparisons use the same ones)."""
    counts = [compat.bootstrap_requested((r.test_metrics or {}).get("summary", {}).get("bootstrap") or {})
              for r in runs]
    counts = [c for c in counts if isinstance(c, int) and c > 0]
    return max(counts) if counts else 1000


def _protocols(done: list[ReportRun]) -> list[dict]:
    """The distinct protocols (test set, validation set, scoring unit) of the finished runs, with their runs."""
    groups: dict = {}
    for r in done:
        p = r.protocol or {}
        s = r.test_metrics["summary"]
        unit = compat.unit(s) + (f" ({s.get('reduce')} over views)" if s.get("unit") == "study" else "")
        key = (p.get("name"), p.get("test"), p.get("val"), unit)
        groups.setdefault(key, {"name": p.get("name") or "not recorded", "test": p.get("test"), "val": p.get("val"),
                                "unit": unit, "sizes": p.get("sizes", {}), "runs": []})["runs"].append(r.name)
    return list(groups.values())


def _references(dataset: str, done: list[ReportRun]):
    """The published references comparable with these runs (all of one protocol and unit), and those left out
    with the reason."""
    from benchmark.data.formats import FORMATS

    fmt = FORMATS.get(dataset)
    keys = fmt.references if fmt else ()
    kinds = {((r.protocol or {}).get("name"), compat.unit(r.test_metrics["summary"])) for r in done}
    if len(kinds) != 1:
        _, left = references_for(dataset, keys, None, None)
        return [], [(ref, "these runs used more than one protocol or scoring unit") for ref, _ in left]
    protocol, unit = kinds.pop()
    return references_for(dataset, keys, protocol, unit)


def _gallery(done: list[ReportRun]) -> list[dict]:
    """Rows of the Grad-CAM gallery: the same test image across every architecture."""
    by_image: dict = {}
    for r in done:
        for entry in r.gallery:
            by_image.setdefault(entry["image"], {"image": entry["image"], "true": entry["true_labels"], "cells": {}})
            by_image[entry["image"]]["cells"][r.name] = {
                "src": _file_b64(r.dir / GRADCAM / entry["file"]), "label": entry["label"],
                "probability": entry["probability"]}
    return [{**v, "cells": [v["cells"].get(r.name) for r in done], "runs": [r.name for r in done]}
            for v in by_image.values()]


def _run_context(r: ReportRun, synthetic: bool) -> dict:
    labels = r.labels
    return {"title": f"cxr-bench run: {r.name}", "run": r, "synthetic": synthetic,
            "figures": build_figures("run", [r], labels, synthetic), "metrics": SUMMARY_METRICS,
            "config_text": yaml.safe_dump(r.config, sort_keys=False) if r.config else "",
            "environment": r.environment, "labels": labels,
            "gallery": [{**e, "src": _file_b64(r.dir / GRADCAM / e["file"])} for e in r.gallery]}

"""The report's figures (matplotlib, Agg backend), returned as PNG bytes to embed in the HTML.

`FIGURES` is the one list of figures: each is built by one function for both page kinds (the comparison page
passes every finished run, a run's page passes that run alone; each a `reports.runs.ReportRun`), so adding a figure
is one function and one entry.
Small multiples use constrained layout, shared axes and one legend per figure, so that nothing overlaps at a
laptop's width.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
                     "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})
SYNTHETIC_NOTE = "SYNTHETIC phantom data"
PANEL_IN = 2.9  # inches per small-multiple panel
COLS = 4
DPI = 100


def _png(fig, synthetic: bool = False) -> bytes:
    if synthetic:
        fig.text(0.995, 0.002, SYNTHETIC_NOTE, ha="right", va="bottom", fontsize=8, color="#b00020")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int, cols: int = COLS, panel: float = PANEL_IN, share: bool = True, legend_rows: int = 0):
    """n panels in rows of `cols`, constrained layout (titles and labels never overlap), shared axes."""
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols + 0.4, panel * rows + 0.35 * legend_rows + 0.2),
                             squeeze=False, sharex=share, sharey=share, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _label_outer(axes, cols: int, xlabel: str, ylabel: str) -> None:
    """Axis labels on the bottom panel of each column and the first panel of each row only."""
    n = len(axes)
    for i, ax in enumerate(axes):
        if i % cols == 0:
            ax.set_ylabel(ylabel)
        if i + cols >= n:
            ax.set_xlabel(xlabel)
            ax.tick_params(labelbottom=True)


def _legend(fig, axes, runs: int) -> None:
    """One legend for the whole figure, below the panels, when there is more than one run."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if runs > 1 and handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), frameon=False)


def _colors(runs) -> dict:
    """One colour per run, the same in every figure of a page."""
    return {r.name: f"C{i % 10}" for i, r in enumerate(runs)}


def _panels(runs, labels, key: str, micro: bool):
    """(title, [(run name, curve, score)]) per panel, from each run's test metrics (metrics.json holds every
    curve, thinned): one panel per label, and the micro average."""
    panels = []
    for label in list(labels) + (["micro average"] if micro else []):
        lines = []
        for r in runs:
            m = r.test_metrics
            if label == "micro average":
                curve = m["summary"].get(f"{key}_micro")
                score = m["summary"].get("auroc_micro" if key == "roc" else "auprc_micro")
            else:
                entry = m["per_label"].get(label, {})
                curve, score = entry.get(key), entry.get("auroc" if key == "roc" else "auprc")
            if curve:
                lines.append((r.name, curve, score))
        panels.append((label, lines))
    return panels


def _curves(runs, labels, synthetic, kind: str) -> bytes:
    panels = _panels(runs, labels, kind, micro=True)
    legend_rows = math.ceil(len(runs) / 5) if len(runs) > 1 else 0
    fig, axes = _grid(len(panels), legend_rows=legend_rows)
    colors = _colors(runs)
    for ax, (title, lines) in zip(axes, panels):
        for i, (name, curve, score) in enumerate(lines):
            ax.plot(curve["x"], curve["y"], lw=1.2, color=colors[name], label=name)
            if score is not None and len(lines) <= 8:
                ax.text(0.98 if kind == "roc" else 0.02, 0.03 + 0.07 * i, f"{score:.2f}", transform=ax.transAxes,
                        ha="right" if kind == "roc" else "left", fontsize=7, color=colors[name])
        if kind == "roc":
            ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        ax.set_title(title if lines else f"{title} (undefined)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
    cols = min(COLS, len(panels))
    if kind == "roc":
        _label_outer(axes, cols, "1 - specificity", "sensitivity")
    else:
        _label_outer(axes, cols, "recall", "precision")
    _legend(fig, axes, len(runs))
    return _png(fig, synthetic)


def roc_curves(runs, labels, synthetic=False) -> bytes:
    """ROC curves: one panel per label plus the micro average, one line per run (AUROC printed in the panel)."""
    return _curves(runs, labels, synthetic, "roc")


def pr_curves(runs, labels, synthetic=False) -> bytes:
    """Precision-recall curves: one panel per label plus the micro average (average precision in the panel)."""
    return _curves(runs, labels, synthetic, "pr")


def reliability(runs, labels, synthetic=False) -> bytes:
    """Reliability diagrams: observed rate against mean predicted probability per bin, per label."""
    panels = []
    for label in labels:
        lines = [(r.name, r.test_metrics["per_label"].get(label, {}).get("reliability")) for r in runs]
        panels.append((label, [(n, c) for n, c in lines if c and c.get("observed")]))
    fig, axes = _grid(len(panels), legend_rows=math.ceil(len(runs) / 5) if len(runs) > 1 else 0)
    colors = _colors(runs)
    for ax, (title, lines) in zip(axes, panels):
        for name, curve in lines:
            ax.plot(curve["mean_predicted"], curve["observed"], marker="o", ms=3, lw=1, label=name,
                    color=colors[name])
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        ax.set_title(title if lines else f"{title} (undefined)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
    _label_outer(axes, min(COLS, len(panels)), "mean predicted probability", "observed rate")
    _legend(fig, axes, len(runs))
    return _png(fig, synthetic)


def test_curves(runs, labels, synthetic=False) -> bytes | None:
    """One run's page: ROC, precision-recall and reliability side by side, every label in each panel (one
    figure with a fixed layout: a report of many runs draws one of these per run, so it must be cheap)."""
    if len(runs) != 1:
        return None
    m = runs[0].test_metrics
    fig, axes = plt.subplots(1, 3, figsize=(12.4, 4.3))
    fig.subplots_adjust(left=0.05, right=0.84, bottom=0.14, top=0.9, wspace=0.28)
    for j, label in enumerate(labels):
        entry = m["per_label"].get(label, {})
        color = f"C{j % 10}"
        if entry.get("roc"):
            axes[0].plot(entry["roc"]["x"], entry["roc"]["y"], lw=1.2, color=color,
                         label=f"{label} ({entry['auroc']:.2f} / {entry['auprc']:.2f})")
        if entry.get("pr"):
            axes[1].plot(entry["pr"]["x"], entry["pr"]["y"], lw=1.2, color=color)
        if entry.get("reliability"):
            axes[2].plot(entry["reliability"]["mean_predicted"], entry["reliability"]["observed"], marker="o", ms=3,
                         lw=1, color=color)
    if m["summary"].get("roc_micro"):
        axes[0].plot(m["summary"]["roc_micro"]["x"], m["summary"]["roc_micro"]["y"], lw=2, ls="--", color="black",
                     label="micro average")
        axes[1].plot(m["summary"]["pr_micro"]["x"], m["summary"]["pr_micro"]["y"], lw=2, ls="--", color="black")
    for ax in (axes[0], axes[2]):
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
    for ax, (title, xlabel, ylabel) in zip(axes, (("ROC", "1 - specificity", "sensitivity"),
                                                  ("precision-recall", "recall", "precision"),
                                                  ("calibration", "mean predicted probability", "observed rate"))):
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.01))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", frameon=False, fontsize=8,
               title="label (AUROC / AUPRC)", title_fontsize=8)
    return _png(fig, synthetic)


def training_curves(runs, labels=None, synthetic=False) -> bytes | None:
    """Loss, validation mean AUROC and learning rate per epoch, one line per run."""
    hists = [(r.name, r.history) for r in runs if r.history is not None and not r.history.empty]
    if not hists:
        return None
    legend_in = 0.3 * math.ceil(len(hists) / 5) if len(hists) > 1 else 0.0
    fig, axes = plt.subplots(1, 3, figsize=(12.4, 3.4 + legend_in))
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, wspace=0.25, bottom=(0.5 + legend_in) / (3.4 + legend_in))
    colors = _colors(runs)
    for name, hist in hists:
        epoch = hist["epoch"] + 1
        color = colors[name]
        axes[0].plot(epoch, hist["loss"], marker="o", ms=3, label=name, color=color)
        if "val_auroc" in hist:
            axes[1].plot(epoch, hist["val_auroc"], marker="o", ms=3, color=color)
        if "learning_rate" in hist:
            axes[2].plot(epoch, hist["learning_rate"], marker="o", ms=3, color=color)
    axes[0].set(title="training loss", xlabel="epoch")
    axes[1].set(title="validation mean AUROC", xlabel="epoch")
    axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if len(hists) > 1:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(len(hists), 5), frameon=False)
    return _png(fig, synthetic)


def auroc_heatmap(runs, labels, synthetic=False) -> bytes | None:
    """Test AUROC by label (columns) and run (rows), with the mean."""
    if len(runs) < 2:
        return None
    names = [r.name for r in runs]
    table = np.array([[r.test_metrics["per_label"][lab].get("auroc") or np.nan for lab in labels] for r in runs],
                     float)
    with np.errstate(all="ignore"):
        table = np.column_stack([table, np.nanmean(table, axis=1)])
    cols = list(labels) + ["mean"]
    fig, ax = plt.subplots(figsize=(min(12.4, 0.95 * len(cols) + 2.8), 0.42 * len(names) + 1.5),
                           layout="constrained")
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e4e6ee")
    im = ax.imshow(np.ma.masked_invalid(table), cmap=cmap, vmin=0.5, vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(table):
        ax.text(j, i, "undefined" if np.isnan(v) else f"{v:.3f}", ha="center", va="center", fontsize=8,
                color="black" if np.isnan(v) or v > 0.8 else "white")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="test AUROC", shrink=0.9)
    return _png(fig, synthetic)


def efficiency(runs, labels=None, synthetic=False) -> bytes | None:
    """Mean test AUROC (95 % CI) against inference time per image; point area proportional to parameters."""
    points = []
    for r in runs:
        s, t = r.test_metrics["summary"], r.timing or {}
        if s.get("auroc_macro") is not None and t.get("inference_ms_per_image") is not None:
            points.append((r.name, t["inference_ms_per_image"], s["auroc_macro"], s.get("auroc_macro_ci"),
                           t.get("params") or 0))
    if len(points) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.6), layout="constrained")
    for i, (name, ms, auc, ci, params) in enumerate(points):
        ax.scatter(ms, auc, s=30 + 400 * params / 45e6, alpha=0.6, color=f"C{i % 10}")
        if ci:
            ax.errorbar(ms, auc, yerr=[[auc - ci[0]], [ci[1] - auc]], fmt="none", c="grey", lw=0.8)
        ax.annotate(name, (ms, auc), fontsize=8, xytext=(5, 5), textcoords="offset points")
    ax.set(xlabel="inference time per image (ms, this machine)", ylabel="test mean AUROC (95% CI)",
           title="accuracy against speed (point area = parameters)")
    return _png(fig, synthetic)


@dataclass(frozen=True)
class Figure:
    """A figure of the report: built by `build(runs, labels, synthetic)` (None when it has nothing to show) for
    each page kind in `pages`."""

    key: str
    title: str
    build: Callable
    pages: tuple = ("index", "run")
    note: str = ""
    needs_metrics: bool = True  # drawn from finished runs only


FIGURES = (
    Figure("heatmap", "AUROC by label", auroc_heatmap, pages=("index",)),
    Figure("curves", "Training", training_curves, needs_metrics=False),
    Figure("roc", "ROC curves (test)", roc_curves, pages=("index",),
           note="AUROC of each run in the panel, in its colour."),
    Figure("pr", "Precision-recall curves (test)", pr_curves, pages=("index",),
           note="Average precision of each run in the panel."),
    Figure("reliability", "Calibration (test)", reliability, pages=("index",),
           note="Points on the diagonal are well calibrated; expected calibration error (10 bins) is in the tables."),
    Figure("test_curves", "ROC, precision-recall and calibration (test)", test_curves, pages=("run",),
           note="Points of the calibration panel on the diagonal are well calibrated."),
    Figure("efficiency", "Accuracy, speed and size", efficiency, pages=("index",)),
)

"""The report's figures (matplotlib, Agg backend), returned as PNG bytes to embed in the HTML.

`FIGURES` is the one list of figures: each is built by one function for both page kinds (the comparison page
passes every finished run, a run's page passes that run alone), so adding a figure is one function and one entry.
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
from sklearn import metrics as skm  # noqa: E402

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
                     "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})
SYNTHETIC_NOTE = "SYNTHETIC phantom data"
PANEL_IN = 2.9  # inches per small-multiple panel
COLS = 4
DPI = 110


def _png(fig, synthetic: bool = False) -> bytes:
    if synthetic:
        fig.text(0.995, 0.002, SYNTHETIC_NOTE, ha="right", va="bottom", fontsize=8, color="#b00020")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
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
    return {r["name"]: f"C{i % 10}" for i, r in enumerate(runs)}


def _present(y, p):
    mask = ~np.isnan(y)
    return y[mask].astype(int), p[mask]


def _label_panels(runs, labels, micro: bool):
    """(title, [(run name, y, p)]) per panel: one per label, and the micro average."""
    panels = []
    for j, label in enumerate(labels + (["micro average"] if micro else [])):
        lines = []
        for r in runs:
            y_true, y_prob = r["test_y"], r["test_p"]
            y, p = (_present(y_true[:, j], y_prob[:, j]) if j < len(labels)
                    else _present(y_true.ravel(), y_prob.ravel()))
            if len(np.unique(y)) == 2:
                lines.append((r["name"], y, p))
        panels.append((label, lines))
    return panels


def _curves(runs, labels, synthetic, kind: str) -> bytes:
    panels = _label_panels(runs, labels, micro=True)
    legend_rows = math.ceil(len(runs) / 5) if len(runs) > 1 else 0
    fig, axes = _grid(len(panels), legend_rows=legend_rows)
    colors = _colors(runs)
    for ax, (title, lines) in zip(axes, panels):
        for i, (name, y, p) in enumerate(lines):
            if kind == "roc":
                x, t, _ = skm.roc_curve(y, p)
                score = skm.roc_auc_score(y, p)
            else:
                prec, rec, _ = skm.precision_recall_curve(y, p)
                x, t = rec, prec
                score = skm.average_precision_score(y, p)
            ax.plot(x, t, lw=1.2, color=colors[name], label=name)
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


def reliability(runs, labels, synthetic=False, bins: int = 10) -> bytes:
    """Reliability diagrams: observed rate against mean predicted probability per bin, per label."""
    from sklearn.calibration import calibration_curve

    panels = _label_panels(runs, labels, micro=False)
    fig, axes = _grid(len(panels), legend_rows=math.ceil(len(runs) / 5) if len(runs) > 1 else 0)
    colors = _colors(runs)
    for ax, (title, lines) in zip(axes, panels):
        for name, y, p in lines:
            frac, mean_p = calibration_curve(y, p, n_bins=bins)
            ax.plot(mean_p, frac, marker="o", ms=3, lw=1, label=name, color=colors[name])
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        ax.set_title(title if lines else f"{title} (undefined)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
    _label_outer(axes, min(COLS, len(panels)), "mean predicted probability", "observed rate")
    _legend(fig, axes, len(runs))
    return _png(fig, synthetic)


def confusion_grid(runs, labels, synthetic=False, kind: str = "f1") -> bytes | None:
    """One 2x2 confusion matrix per label at the chosen threshold kind (a run's page: one run)."""
    if len(runs) != 1:
        return None
    per_label = runs[0]["test_metrics"]["per_label"]
    cols = 5
    fig, axes = _grid(len(labels), cols=cols, panel=2.3, share=False)
    for ax, label in zip(axes, labels):
        m = per_label[label].get("by_threshold", {}).get(kind)
        ax.grid(False)
        if not m:
            ax.set_title(f"{label}\n(no labelled images)")
            ax.axis("off")
            continue
        cm = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, cm.max()))
        for (i, k), v in np.ndenumerate(cm):
            ax.text(k, i, f"{v:d}", ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks([0, 1], ["pred 0", "pred 1"])
        ax.set_yticks([0, 1], ["true 0", "true 1"])
        ax.set_title(f"{label}\nthreshold {m['threshold']:.2f}", fontsize=9)
    return _png(fig, synthetic)


def training_curves(runs, labels=None, synthetic=False) -> bytes | None:
    """Loss, validation mean AUROC and learning rate per epoch, one line per run."""
    hists = [(r["name"], r["history"]) for r in runs if r.get("history") is not None and not r["history"].empty]
    if not hists:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(12.4, 3.5 + (0.35 * math.ceil(len(hists) / 5) if len(hists) > 1 else 0)),
                             layout="constrained")
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
    _legend(fig, axes, len(hists))
    return _png(fig, synthetic)


def auroc_heatmap(runs, labels, synthetic=False) -> bytes | None:
    """Test AUROC by label (columns) and run (rows), with the mean."""
    if len(runs) < 2:
        return None
    names = [r["name"] for r in runs]
    table = np.array([[r["test_metrics"]["per_label"][lab].get("auroc") or np.nan for lab in labels] for r in runs],
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
        s, t = r["test_metrics"]["summary"], r.get("timing") or {}
        if s.get("auroc_macro") is not None and t.get("inference_ms_per_image") is not None:
            points.append((r["name"], t["inference_ms_per_image"], s["auroc_macro"], s.get("auroc_macro_ci"),
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
    Figure("roc", "ROC curves (test)", roc_curves, note="AUROC of each run in the panel, in its colour."),
    Figure("pr", "Precision-recall curves (test)", pr_curves, note="Average precision of each run in the panel."),
    Figure("reliability", "Calibration (test)", reliability,
           note="Points on the diagonal are well calibrated; expected calibration error (10 bins) is in the tables."),
    Figure("confusion", "Confusion matrices (test)", confusion_grid, pages=("run",),
           note="At the F1-optimal threshold chosen on validation."),
    Figure("efficiency", "Accuracy, speed and size", efficiency, pages=("index",)),
)

"""The report's figures (matplotlib / seaborn, Agg backend), returned as PNG bytes to embed in the HTML."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
SYNTHETIC_NOTE = "SYNTHETIC phantom data"


def _png(fig, synthetic: bool = False) -> bytes:
    if synthetic:
        fig.text(0.995, 0.005, SYNTHETIC_NOTE, ha="right", va="bottom", fontsize=8, color="#b00020")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int, width: float = 3.2, cols: int = 4):
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, width * rows * 0.92), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def training_curves(histories: dict, synthetic=False) -> bytes:
    """Loss, validation mean AUROC and learning rate per epoch, one line per run."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, hist in histories.items():
        if hist is None or hist.empty:
            continue
        epoch = hist["epoch"] + 1
        axes[0].plot(epoch, hist["loss"], marker="o", ms=3, label=name)
        if "val_auroc" in hist:
            axes[1].plot(epoch, hist["val_auroc"], marker="o", ms=3, label=name)
        if "learning_rate" in hist:
            axes[2].plot(epoch, hist["learning_rate"], marker="o", ms=3, label=name)
    axes[0].set(title="training loss", xlabel="epoch")
    axes[1].set(title="validation mean AUROC", xlabel="epoch")
    axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
    axes[1].legend(fontsize=7, loc="lower right")
    return _png(fig, synthetic)


def _curves(runs: dict, labels, kind: str, synthetic: bool) -> bytes:
    """ROC or PR curves: one panel per label plus the micro average, one line per run."""
    fig, axes = _grid(len(labels) + 1)
    for name, (y_true, y_prob) in runs.items():
        for j, ax in enumerate(axes):
            if j < len(labels):
                y, p = y_true[:, j], y_prob[:, j]
            else:
                y, p = y_true.ravel(), y_prob.ravel()
            mask = ~np.isnan(y)
            y, p = y[mask].astype(int), p[mask]
            if len(np.unique(y)) < 2:
                continue
            if kind == "roc":
                x, t, _ = skm.roc_curve(y, p)
                score = skm.roc_auc_score(y, p)
            else:
                prec, rec, _ = skm.precision_recall_curve(y, p)
                x, t = rec, prec
                score = skm.average_precision_score(y, p)
            ax.plot(x, t, lw=1.2, label=f"{name} ({score:.2f})")
    for j, ax in enumerate(axes):
        title = labels[j] if j < len(labels) else "micro average"
        if kind == "roc":
            ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
            ax.set(title=title, xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
        else:
            ax.set(title=title, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=6, loc="lower right" if kind == "roc" else "lower left")
    return _png(fig, synthetic)


def roc_curves(runs: dict, labels, synthetic=False) -> bytes:
    return _curves(runs, labels, "roc", synthetic)


def pr_curves(runs: dict, labels, synthetic=False) -> bytes:
    return _curves(runs, labels, "pr", synthetic)


def confusion_grid(per_label: dict, labels, kind: str, synthetic=False) -> bytes:
    """One 2x2 confusion matrix per label at the chosen threshold kind."""
    fig, axes = _grid(len(labels), width=2.6, cols=5)
    for ax, label in zip(axes, labels):
        m = per_label[label].get("by_threshold", {}).get(kind)
        if not m:
            ax.set_title(f"{label}\n(no labelled images)")
            ax.axis("off")
            continue
        cm = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        sns.heatmap(cm, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax,
                    xticklabels=["pred 0", "pred 1"], yticklabels=["true 0", "true 1"])
        ax.set_title(f"{label}\nthreshold {m['threshold']:.2f}", fontsize=9)
    return _png(fig, synthetic)


def reliability(runs: dict, labels, synthetic=False, bins: int = 10) -> bytes:
    """Reliability diagrams: observed rate against mean predicted probability per bin, per label."""
    from sklearn.calibration import calibration_curve

    fig, axes = _grid(len(labels))
    for name, (y_true, y_prob) in runs.items():
        for j, ax in enumerate(axes):
            mask = ~np.isnan(y_true[:, j])
            y, p = y_true[mask, j].astype(int), y_prob[mask, j]
            if len(np.unique(y)) < 2:
                continue
            frac, mean_p = calibration_curve(y, p, n_bins=bins)
            ax.plot(mean_p, frac, marker="o", ms=3, lw=1, label=name)
    for ax, label in zip(axes, labels):
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        ax.set(title=label, xlabel="mean predicted probability", ylabel="observed rate", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=6, loc="upper left")
    return _png(fig, synthetic)


def auroc_heatmap(table, synthetic=False) -> bytes:
    """AUROC by label (columns) and run (rows)."""
    fig, ax = plt.subplots(figsize=(1.1 * table.shape[1] + 3, 0.45 * table.shape[0] + 1.6))
    sns.heatmap(table, annot=True, fmt=".3f", cmap="viridis", vmin=0.5, vmax=1.0, ax=ax,
                cbar_kws={"label": "test AUROC"})
    ax.set(xlabel="", ylabel="")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    return _png(fig, synthetic)


def efficiency(rows: list[dict], synthetic=False) -> bytes:
    """Mean test AUROC against inference time per image; point area proportional to parameters."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r.get("test_auroc_macro") is None or r.get("inference_ms_per_image") is None:
            continue
        size = 30 + 400 * (r.get("params") or 0) / 45e6
        ax.scatter(r["inference_ms_per_image"], r["test_auroc_macro"], s=size, alpha=0.6)
        lo, hi = r.get("test_auroc_macro_ci_low"), r.get("test_auroc_macro_ci_high")
        if lo is not None and hi is not None:
            ax.errorbar(r["inference_ms_per_image"], r["test_auroc_macro"],
                        yerr=[[r["test_auroc_macro"] - lo], [hi - r["test_auroc_macro"]]], fmt="none", c="grey", lw=0.8)
        ax.annotate(r["run"], (r["inference_ms_per_image"], r["test_auroc_macro"]), fontsize=8,
                    xytext=(5, 5), textcoords="offset points")
    ax.set(xlabel="inference time per image (ms, this machine)", ylabel="test mean AUROC (95% CI)",
           title="accuracy against speed (point area = parameters)")
    return _png(fig, synthetic)

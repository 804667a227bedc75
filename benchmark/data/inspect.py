"""`data inspect`: counts of images, patients, studies, views and label values of a label file (pandas only)."""

from __future__ import annotations

import numpy as np

from benchmark.data.load import load_table
from benchmark.data.policies import training_targets


def inspect_table(dataset: str, csv, data_root=None, policy="mixed", blank="negative", all_views=False,
                  path_column="Path", patient_column=None, labels="all") -> dict:
    """Summarise a label file as the JSON object `data inspect --json` prints."""
    ds = load_table(dataset, csv, data_root, views="all" if all_views else "frontal", need_files=False,
                    path_column=path_column, patient_column=patient_column, labels=labels,
                    include_valid=False)
    frame = ds.frame
    label_names = [c for c in ds.labels if c in frame.columns]
    raw = frame[label_names].to_numpy(dtype=np.float32)
    targets = training_targets(raw, label_names, policy, blank)
    counts = {}
    after = {}
    for j, label in enumerate(label_names):
        col = raw[:, j]
        counts[label] = {"positive": int((col == 1).sum()), "negative": int((col == 0).sum()),
                         "uncertain": int((col == -1).sum()), "blank": int(np.isnan(col).sum())}
        t = targets[:, j]
        known = ~np.isnan(t)
        after[label] = {"positive": int((t[known] >= 0.5).sum()), "negative": int((t[known] < 0.5).sum()),
                        "ignored": int((~known).sum())}
    has_studies = dataset in ("chexpert", "phantom")
    return {
        "dataset": dataset,
        "source": str(csv),
        "synthetic": ds.synthetic,
        "images": int(len(frame)),
        "patients": int(frame["patient"].nunique()),
        "studies": int(frame["study"].nunique()) if has_studies else None,
        "views": {"frontal": int((frame["view"] == "frontal").sum()),
                  "lateral": int((frame["view"] == "lateral").sum())},
        "labels": counts,
        "after_policy": after,
    }


def format_table(summary: dict) -> str:
    """A human-readable version of inspect_table's result."""
    lines = [f"{summary['source']}{'  (SYNTHETIC phantom data)' if summary['synthetic'] else ''}",
             f"images {summary['images']}, patients {summary['patients']}, studies {summary['studies']}, "
             f"frontal {summary['views']['frontal']}, lateral {summary['views']['lateral']}", "",
             f"{'label':28s} {'pos':>7s} {'neg':>7s} {'unc':>7s} {'blank':>7s} | {'pos':>7s} {'neg':>7s} {'ign':>7s}"]
    for label, c in summary["labels"].items():
        a = summary["after_policy"][label]
        lines.append(f"{label:28s} {c['positive']:7d} {c['negative']:7d} {c['uncertain']:7d} {c['blank']:7d} | "
                     f"{a['positive']:7d} {a['negative']:7d} {a['ignored']:7d}")
    return "\n".join(lines)

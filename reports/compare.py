"""Comparing runs: every pair of runs scored on the same test set, with the cost linear in the runs.

Runs share a test set when they scored the same units (images or studies) with the same truth. For each such group
the patient resamples are drawn once (`PatientBootstrap`, seeded by the test set, so they are the ones behind every
run's own confidence intervals in metrics.json), each run's resampled AUROCs are computed once, and every pair's
bootstrap differences are taken from them; DeLong's structural components are likewise computed once per run and
label. A pair then costs a subtraction and a covariance, not two more bootstraps.

Two families of tests, each adjusted by Holm's method over the comparisons shown: the macro AUROC of every pair
(paired patient bootstrap) and every label of every pair (DeLong).
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np

from reports.scoring import score_units
from reports.stats import (PatientBootstrap, bootstrap_p, delong_components, delong_from, holm, percentile_ci,
                           resampled_aurocs)


def scored_test(run: dict):
    """The run's test set as it was scored (its unit from metrics.json), from its prediction file."""
    summary = run["test_metrics"]["summary"]
    return score_units(run["test_frame"], run["test_y"], run["test_p"], summary.get("unit", "image"),
                       summary.get("reduce") or "max")


def _group_key(scored, labels) -> str:
    order = np.argsort(scored.keys)
    digest = hashlib.sha256()
    digest.update("|".join(labels).encode())
    digest.update("\n".join(scored.keys[order]).encode())
    digest.update(np.nan_to_num(scored.truth[order], nan=-1).tobytes())
    return digest.hexdigest()


def compare_runs(runs: list[dict], n_boot: int) -> list[dict]:
    """Every pair of finished runs that share a test set: the macro AUROC by paired patient bootstrap and each
    label by DeLong; `diff` is a's AUROC minus b's. Holm-adjusted p-values in `p_holm`. Each run gets
    `boot_macro` (its resampled macro AUROCs) for the across-seed summaries."""
    groups: dict = {}
    for r in runs:
        if not r.get("test_metrics") or r.get("test_frame") is None:
            continue
        scored = scored_test(r)
        groups.setdefault(_group_key(scored, r["labels"]), []).append((r, scored))
    comparisons = []
    for members in groups.values():
        if len(members) < 2 or not n_boot:
            continue
        base = members[0][1]
        order = {k: i for i, k in enumerate(base.keys)}
        aligned = []
        for r, scored in members:  # the same units in the same order for every run of the group
            idx = np.array([order[k] for k in scored.keys])
            probs = np.empty_like(scored.probs)
            probs[idx] = scored.probs
            aligned.append((r, probs))
        truth, labels = base.truth, members[0][0]["labels"]
        boot = PatientBootstrap(base.patients, truth, n_boot)
        defined = [j for j in range(len(labels)) if boot.defined[j]]
        macro_boot, macro, components = {}, {}, {}
        for r, probs in aligned:
            resampled = resampled_aurocs(truth, probs, boot)
            macro_boot[r["name"]] = resampled[:, defined].mean(axis=1) if defined else np.full(boot.n, np.nan)
            r["boot_macro"] = macro_boot[r["name"]]
            components[r["name"]] = {}
            for j in defined:
                present = ~np.isnan(truth[:, j])
                components[r["name"]][j] = delong_components(truth[present, j], probs[present, j])
            macro[r["name"]] = float(np.mean([components[r["name"]][j][0] for j in defined])) if defined else None
        for (ra, _), (rb, _) in itertools.combinations(aligned, 2):
            a, b = ra["name"], rb["name"]
            if macro[a] is not None and macro[b] is not None:
                diffs = macro_boot[a] - macro_boot[b]
                comparisons.append({"a": a, "b": b, "label": "macro", "diff": macro[a] - macro[b],
                                    "ci": percentile_ci(diffs), "p": bootstrap_p(diffs), "test": "bootstrap",
                                    "resamples": boot.n})
            for j in defined:
                result = delong_from(components[a][j], components[b][j])
                comparisons.append({"a": a, "b": b, "label": labels[j], "diff": result["diff"], "ci": result["ci"],
                                    "p": result["p"], "test": "delong"})
    for family in ("bootstrap", "delong"):
        members = [c for c in comparisons if c["test"] == family]
        for c, adjusted in zip(members, holm([c["p"] for c in members])):
            c["p_holm"] = adjusted
    return comparisons


def comparison_matrix(runs: list[dict], comparisons: list[dict]) -> dict:
    """runs x runs cells of the macro comparisons: {row: {column: comparison as row minus column}}."""
    cells: dict = {r["name"]: {} for r in runs}
    for c in comparisons:
        if c["label"] != "macro":
            continue
        cells.setdefault(c["a"], {})[c["b"]] = c
        flipped = dict(c, a=c["b"], b=c["a"], diff=-c["diff"], ci=[-c["ci"][1], -c["ci"][0]] if c["ci"] else None)
        cells.setdefault(c["b"], {})[c["a"]] = flipped
    return cells

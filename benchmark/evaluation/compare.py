"""Comparing configurations: runs that differ only in seed are one configuration, and configurations scored on the
same test set are compared with a cost linear in the runs.

Runs share a test set when they scored the same units (images or studies) with the same truth. For each such group
the patient resamples are drawn once (`PatientBootstrap`, seeded by the test set, so they are the ones behind every
run's own confidence intervals in metrics.json) and each run's resampled AUROCs are computed once; a pair then costs
a subtraction and a variance, not two more bootstraps.

- Support: a label enters the macro, its CI and any test only with at least `min_positives` positive and as many
  negative patients in the test set; the others are listed with their counts (`Comparison.support`).
- Configurations (`benchmark.config.configuration_of`: the keys that change results, minus the seed): a
  configuration's AUROC is the mean over its seeds; the variance of a difference is the bootstrap's (of the
  seed-means, on shared resamples) plus the between-seed variance of each side's mean (s^2 / k), as Bouthillier et
  al. (MLSys 2021) recommend. With one seed per configuration the second term is unknown and left out.
- Per-label tests: where a patient contributes more than one scored unit, the paired patient bootstrap of the
  label; DeLong (Sun and Xu's algorithm) only where every patient has one unit. Each row records its `test`.
- p-values: from the difference's standard error (normal approximation), never below 1 / (B + 1); DeLong's from
  its own. `p_resampled` keeps the bootstrap's percentile p, (k + 1) / (B + 1).
- Families: the primary family is every configuration against the reference (the best on validation mean AUROC,
  never chosen on test), Holm-adjusted; everything else (the other pairs, every label) is exploratory,
  Benjamini-Hochberg-adjusted (`p_bh`; `p_holm` is Holm's within that family, kept for summary.json's readers).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from benchmark.evaluation.scoring import score_units
from benchmark.evaluation.stats import (
    PatientBootstrap,
    bh,
    bootstrap_p,
    delong_components,
    delong_from,
    holm,
    normal_p,
    percentile_ci,
    resampled_aurocs,
)

PATIENT_BOOTSTRAP = "patient bootstrap"
DELONG = "delong"
Z95 = 1.959964


@dataclass
class Configuration:
    """Runs that differ only in seed, scored on one test set: per label, each run's AUROC, resampled AUROCs (B x L)
    and, where DeLong applies, its structural components."""

    name: str
    runs: list
    aurocs: np.ndarray  # (runs, labels) point AUROCs (NaN for unsupported labels)
    resampled: list  # per run: (B, labels)
    components: list = field(default_factory=list)  # per run: {label index: (auc, v10, v01)}
    val_macro: float | None = None

    @property
    def seeds(self) -> int:
        return len(self.runs)

    def boot(self, cols) -> np.ndarray:
        """(B,) resampled mean over seeds of the mean over `cols`."""
        return np.mean([r[:, cols].mean(axis=1) for r in self.resampled], axis=0)

    def point(self, cols) -> float:
        return float(self.aurocs[:, cols].mean(axis=1).mean())

    def seed_var(self, cols) -> float:
        """The between-seed variance of the mean over seeds (s^2 / k; 0 with one seed)."""
        values = self.aurocs[:, cols].mean(axis=1)
        return float(values.var(ddof=1) / len(values)) if len(values) > 1 else 0.0


@dataclass
class Comparison:
    """What compare_runs returns: the comparison rows, the configurations, the reference, the label support."""

    rows: list
    configurations: list
    reference: str | None
    support: list  # per test set: {label: {"positive_patients", "negative_patients", "units", "positives", "kept"}}
    min_positives: int
    n_boot: int


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


def configuration_key(cfg: dict) -> str:
    """Runs with equal keys differ only in seed: the declared result-changing keys minus the seed."""
    from benchmark.config import configuration_of

    return json.dumps(configuration_of(cfg or {}), sort_keys=True, default=str)


def _configuration_names(grouped: list[list[dict]], taken: set) -> list[str]:
    """The run's name for a configuration of one run; else the values of the keys in which the configurations
    differ (backbone, image_size=..., ...), or the first run's name without its seed part, and the seed count."""
    from benchmark.config import configuration_of

    confs = [configuration_of(runs[0].get("config") or {}) for runs in grouped]
    keys = sorted({k for c in confs for k in c})
    varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in confs}) > 1]
    names = []
    for runs, conf in zip(grouped, confs):
        if len(runs) == 1:
            names.append(runs[0]["name"])
            continue
        label = " ".join(str(conf.get(k)) if k == "backbone" else f"{k}={json.dumps(conf.get(k), default=str)}"
                         for k in varying)
        name = f"{label or re.sub(r'[-_.]?seeds?[-_=]?[0-9]+', '', runs[0]['name'])} ({len(runs)} seeds)"
        while name in taken or name in names:
            name += "'"
        names.append(name)
    return names


def _val_macro(run: dict):
    return ((run.get("val_metrics") or {}).get("summary") or {}).get("auroc_macro")


def label_support(boot: PatientBootstrap, truth, labels) -> dict:
    """Per label: the positive and negative patients and units of the test set, and whether it is kept."""
    return {lab: {"positive_patients": int(boot.positive_patients[j]),
                  "negative_patients": int(boot.negative_patients[j]),
                  "positives": int(np.nansum(truth[:, j] == 1)), "units": int((~np.isnan(truth[:, j])).sum()),
                  "kept": bool(boot.defined[j])} for j, lab in enumerate(labels)}


def _aligned(members):
    """Each member's probabilities in the first member's unit order."""
    base = members[0][1]
    order = {k: i for i, k in enumerate(base.keys)}
    out = []
    for r, scored in members:
        idx = np.array([order[k] for k in scored.keys])
        probs = np.empty_like(scored.probs)
        probs[idx] = scored.probs
        out.append((r, probs))
    return out


def _configurations(aligned, truth, boot, clustered: bool, taken: set) -> list[Configuration]:
    by_key: dict = {}
    for r, probs in aligned:
        by_key.setdefault(configuration_key(r.get("config")), []).append((r, probs))
    supported = [j for j in range(truth.shape[1]) if boot.defined[j]]
    out = []
    names = _configuration_names([[r for r, _ in members] for members in by_key.values()], taken)
    for name, members in zip(names, by_key.values()):
        runs = [r for r, _ in members]
        resampled, comps = [], []
        aurocs = np.full((len(runs), truth.shape[1]), np.nan)
        for i, (r, probs) in enumerate(members):
            resampled.append(resampled_aurocs(truth, probs, boot))
            comps.append({})
            for j in supported:
                present = ~np.isnan(truth[:, j])
                comps[i][j] = delong_components(truth[present, j], probs[present, j])  # its AUROC by midranks
                aurocs[i, j] = comps[i][j][0]
            if clustered:
                comps[i] = {}  # DeLong is not used: the components are not kept
            r["boot_macro"] = resampled[-1][:, supported].mean(axis=1) if supported else np.full(boot.n, np.nan)
        vals = [_val_macro(r) for r in runs]
        taken.add(name)
        for r in runs:
            r["configuration"] = name
        out.append(Configuration(name, runs, aurocs, resampled, comps,
                                 float(np.mean(vals)) if all(v is not None for v in vals) else None))
    return out


def _bootstrap_row(a: Configuration, b: Configuration, label: str, cols, n: int) -> dict:
    """a minus b on the mean over `cols`: the paired patient bootstrap, plus the between-seed variances."""
    diffs = a.boot(cols) - b.boot(cols)
    diff = a.point(cols) - b.point(cols)
    seed_var = a.seed_var(cols) + b.seed_var(cols)
    boot_var = float(np.nanvar(diffs, ddof=1)) if n > 1 else 0.0
    se = math.sqrt(boot_var + seed_var)
    pooled = a.seeds > 1 or b.seeds > 1
    ci = [diff - Z95 * se, diff + Z95 * se] if pooled else percentile_ci(diffs)
    return {"a": a.name, "b": b.name, "label": label, "diff": diff, "ci": ci, "p": normal_p(diff, se, n),
            "p_resampled": bootstrap_p(diffs), "se": se, "seed_se": math.sqrt(seed_var), "test": PATIENT_BOOTSTRAP,
            "resamples": n, "seeds": [a.seeds, b.seeds]}


def _delong_row(a: Configuration, b: Configuration, label: str, j: int) -> dict:
    """DeLong on the seed-means (its components are linear in the AUROC, so they average over seeds), plus the
    between-seed variances."""
    def mean_components(c):
        parts = [comp[j] for comp in c.components]
        return (float(np.mean([p[0] for p in parts])), np.mean([p[1] for p in parts], axis=0),
                np.mean([p[2] for p in parts], axis=0))

    result = delong_from(mean_components(a), mean_components(b))
    seed_var = a.seed_var([j]) + b.seed_var([j])
    se = math.sqrt(result["se"] ** 2 + seed_var)
    diff = result["diff"]
    if seed_var:
        result["ci"] = [diff - Z95 * se, diff + Z95 * se]
        result["p"] = normal_p(diff, se)
    return {"a": a.name, "b": b.name, "label": label, "diff": diff, "ci": result["ci"], "p": result["p"],
            "se": se, "seed_se": math.sqrt(seed_var), "test": DELONG, "seeds": [a.seeds, b.seeds]}


def _pairs(configs: list[Configuration], reference: str | None):
    """Every pair once; a pair with the reference is oriented configuration minus reference."""
    for a, b in itertools.combinations(configs, 2):
        yield (b, a) if a.name == reference else (a, b)


def _reference(configs: list[Configuration]) -> str | None:
    """The configuration best on validation mean AUROC (mean over its seeds); never chosen on test."""
    scored = [c for c in configs if c.val_macro is not None]
    return max(scored, key=lambda c: c.val_macro).name if len(scored) >= 2 else None


def _adjust(rows: list[dict]) -> None:
    """Primary family (macro, each configuration against the reference; every macro pair without a reference):
    Holm. The rest: exploratory, Benjamini-Hochberg (and Holm within it, in p_holm)."""
    for c in rows:
        ref = c.get("reference")
        primary = c["label"] == "macro" and (ref is None or ref in (c["a"], c["b"]))
        c["family"] = "primary" if primary else "exploratory"
    for family in ("primary", "exploratory"):
        members = [c for c in rows if c["family"] == family]
        for c, h, f in zip(members, holm([c["p"] for c in members]), bh([c["p"] for c in members])):
            c["p_holm"] = h
            if family == "exploratory":
                c["p_bh"] = f


def compare(runs: list[dict], n_boot: int, min_positives: int = 10) -> Comparison:
    """Every pair of configurations that share a test set: the macro AUROC (over supported labels) by the paired
    patient bootstrap and each supported label by the patient bootstrap or DeLong; `diff` is a minus b."""
    groups: dict = {}
    for r in runs:
        if not r.get("test_metrics") or r.get("test_frame") is None:
            continue
        scored = scored_test(r)
        groups.setdefault(_group_key(scored, r["labels"]), []).append((r, scored))
    rows, configs, support, taken = [], [], [], set()
    for members in groups.values():
        base, labels = members[0][1], members[0][0]["labels"]
        boot = PatientBootstrap(base.patients, base.truth, n_boot or 0, min_patients=min_positives)
        support.append({"runs": [r["name"] for r, _ in members], "labels": label_support(boot, base.truth, labels)})
        if len(members) < 2 or not n_boot or not boot.n:
            continue
        clustered = bool((np.unique(base.patients, return_counts=True)[1] > 1).any())
        group_configs = _configurations(_aligned(members), base.truth, boot, clustered, taken)
        configs += group_configs
        supported = [j for j in range(len(labels)) if boot.defined[j]]
        if not supported or len(group_configs) < 2:
            continue
        reference = _reference(group_configs)
        group_rows = []
        for a, b in _pairs(group_configs, reference):
            group_rows.append(_bootstrap_row(a, b, "macro", supported, boot.n))
            for j in supported:
                group_rows.append(_bootstrap_row(a, b, labels[j], [j], boot.n) if clustered
                                  else _delong_row(a, b, labels[j], j))
        for c in group_rows:
            c["reference"] = reference
        rows += group_rows
    references = {c["reference"] for c in rows if c.get("reference")}
    reference = references.pop() if len(references) == 1 else None
    _adjust(rows)
    return Comparison(rows, configs, reference, support, min_positives, n_boot)


def compare_runs(runs: list[dict], n_boot: int, min_positives: int = 10) -> list[dict]:
    """The comparison rows alone (see compare)."""
    return compare(runs, n_boot, min_positives).rows


def comparison_matrix(names: list[str], comparisons: list[dict]) -> dict:
    """names x names cells of the macro comparisons: {row: {column: comparison as row minus column}}."""
    cells: dict = {n: {} for n in names}
    for c in comparisons:
        if c["label"] != "macro":
            continue
        cells.setdefault(c["a"], {})[c["b"]] = c
        flipped = dict(c, a=c["b"], b=c["a"], diff=-c["diff"], ci=[-c["ci"][1], -c["ci"][0]] if c["ci"] else None)
        cells.setdefault(c["b"], {})[c["a"]] = flipped
    return cells

"""The tuning section of a tuned sweep's report: per configuration the trials (from their run folders, not from
Optuna's database, so a report needs no Optuna), the chosen setting, and the expected best validation AUROC against
the number of trials (Dodge et al., "Show Your Work", EMNLP 2019), the curve that says whether a winner won on
architecture or on budget.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.runs.rundir import SWEEP_CONFIG, read_config


def tuned_config(path: Path):
    """The sweep's configuration when it tunes, else None."""
    from benchmark.runs.plan import is_tuned

    path = Path(path)
    cfg = read_config(path, SWEEP_CONFIG) if (path / SWEEP_CONFIG).is_file() else None
    return cfg if cfg is not None and is_tuned(cfg) else None


def tuning_summary(path: Path) -> dict:
    """summary.json's "tuning": {configuration: {trials, pruned, failed, best_trial, best_params, best_val,
    budget}} ({} for a sweep that does not tune)."""
    from benchmark.runs.plan import chosen_trial, configurations, trials_of

    cfg = tuned_config(path)
    if cfg is None:
        return {}
    out = {}
    for name, _ in configurations(cfg):
        trials = trials_of(path, name, cfg.tune_space)
        best = chosen_trial(path, name, cfg.tune_space)
        spent = sum(t["seconds"] or 0 for t in trials)
        out[name] = {"trials": len(trials), "pruned": sum(t["status"] == "pruned" for t in trials),
                     "failed": sum(t["status"] == "failed" for t in trials),
                     "best_trial": best["number"] if best else None, "best_params": best["params"] if best else None,
                     "best_val": best["val"] if best else None,
                     "budget": {"trials": cfg.tune_trials, "hours": cfg.tune_budget_hours, "space": cfg.tune_space,
                                "sampler": cfg.tune_sampler, "pruner": cfg.tune_pruner, "seeds": cfg.tune_seeds,
                                "spent_hours": spent / 3600}}
    return out


def expected_curve(values: list[float]) -> list[tuple[int, float]]:
    """(n, expected best of n trials) for n = 1 .. the number of scored trials."""
    from benchmark.runs.plan import expected_max

    return [(n, expected_max(values, n)) for n in range(1, len(values) + 1)]


def budget_figure(curves: dict, synthetic: bool) -> bytes | None:
    """One panel: each configuration's expected best validation AUROC against the number of trials."""
    from reports.figures import _png, plt

    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    for name, curve in curves.items():
        ax.plot([n for n, _ in curve], [v for _, v in curve], marker="o", label=name)
    ax.set_xlabel("trials (budget)")
    ax.set_ylabel("expected best validation mean AUROC")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower right")
    return _png(fig, synthetic)


def importances(path: Path, cfg) -> dict:
    """Optuna's hyperparameter importance per configuration (with two or more tuned keys and Optuna installed;
    {} otherwise: the page says why)."""
    from benchmark.runs.plan import DB

    if len(cfg.tune_space) < 2 or not (Path(path) / DB).is_file():
        return {}
    try:
        import optuna
    except ImportError:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {}
    storage = f"sqlite:///{Path(path).resolve() / DB}"
    for summary in optuna.study.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        try:
            out[summary.study_name] = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError):  # too few finished trials
            continue
    return out


def shown(value) -> str:
    """A tuned value as the page shows it: numbers to 3 significant digits (learning rates span decades)."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return "–" if value is None else str(value)


def rank_first(configurations: list, seed: int = 0) -> dict | None:
    """The probability that each configuration ranks first on test mean AUROC (over the labels every one of them
    supports), resampling patients (the comparison's shared patient bootstrap, `benchmark.evaluation.compare`) and seeds (one of
    a configuration's runs drawn per resample): {name: share of resamples it won}, or None with fewer than two
    configurations or no resamples."""
    import numpy as np

    if len(configurations) < 2 or not configurations[0].resampled:
        return None
    n = configurations[0].resampled[0].shape[0]
    if n == 0 or any(r.shape[0] != n for c in configurations for r in c.resampled):
        return None  # configurations scored on different test sets or resamples: not one contest
    supported = np.all([~np.isnan(c.aurocs).any(axis=0) for c in configurations], axis=0)
    cols = np.flatnonzero(supported)
    if not len(cols):
        return None
    rng = np.random.default_rng(seed)
    scores = []
    for c in configurations:
        per_run = np.stack([r[:, cols].mean(axis=1) for r in c.resampled])  # (seeds, resamples)
        scores.append(per_run[rng.integers(len(c.runs), size=n), np.arange(n)])
    winners = np.argmax(np.stack(scores), axis=0)
    return {c.name: float(np.mean(winners == i)) for i, c in enumerate(configurations)}


def tuning_section(path: Path, summary: dict, synthetic: bool, compared: list | None = None) -> dict | None:
    """What the page's tuning section shows, or None for a sweep that does not tune; `compared` are the
    comparison's configurations (benchmark.evaluation.compare), for the probability that each ranks first."""
    import base64

    from benchmark.runs.plan import trials_of

    cfg = tuned_config(path)
    if cfg is None or not summary:
        return None
    configurations, curves = [], {}
    for name, s in summary.items():
        trials = trials_of(path, name, cfg.tune_space)
        scored = [t["val"] for t in trials if t["status"] == "done" and t["val"] is not None]
        curves[name] = expected_curve(scored)
        for t in trials:
            t["shown"] = [shown(t["params"].get(k)) for k in cfg.tune_space]
        chosen = ", ".join(f"{k} = {shown(v)}" for k, v in (s["best_params"] or {}).items())
        configurations.append({"name": name, **s, "rows": trials, "curve": curves[name], "chosen": chosen})
    png = budget_figure(curves, synthetic)
    first = rank_first(compared or [])
    return {"tuned_keys": list(cfg.tune_space), "space": cfg.tune_space, "configurations": configurations,
            "rank_first": first, "resamples": compared[0].resampled[0].shape[0] if first else 0,
            "budget": next(iter(summary.values()))["budget"], "importances": importances(path, cfg),
            "figure": "data:image/png;base64," + base64.b64encode(png).decode() if png else None}

"""A sweep's plan, read the same way by the sweep, retrain, imports and the report: the grid's runs, or for a
tuning sweep (benchmark.sweep.tune) each configuration's chosen setting per seed, chosen from the trial folders alone (no
Optuna): a trial is an ordinary run folder, `runs/<configuration>/trial-NNN/`, and selection reads its status.json
and history.csv (validation only)."""

from __future__ import annotations

import math
from pathlib import Path

from benchmark.config import KEYS, SWEEP_KEYS, TUNE_KEYS, Config, merge, plan_grid
from benchmark.errors import UserError

DB = "tuning.db"  # the studies, in the sweep folder
PRUNED = "pruned"  # a trial's status.json when the pruner stopped it


def plan_runs(cfg: Config, out: Path | None = None) -> list[tuple[str, Config]]:
    """(run name, config) of every run of a sweep: the grid's points (named by the keys that vary), or for a
    tuning sweep each configuration's chosen setting per seed, read from its trials under `out`."""
    if is_tuned(cfg):
        return final_plan(cfg, out)
    return plan_grid(cfg)


def is_tuned(cfg) -> bool:
    return getattr(cfg, "tune_space", None) is not None


def check_tuning(cfg) -> None:
    """Refuse (UserError) a tuning block that cannot run: a space without a budget, a budget without a space, a
    tuned key that is also swept, or a seeds axis (the chosen setting's seeds are tune_seeds)."""
    if not is_tuned(cfg):
        if cfg.tune_trials is not None or cfg.tune_budget_hours is not None:
            raise UserError("tune_trials / tune_budget_hours need tune_space: the keys to tune and their ranges, "
                            "e.g. --set 'tune_space={learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}}'")
        return
    if cfg.tune_trials is None and cfg.tune_budget_hours is None:
        raise UserError("tune_space needs a budget per configuration: --set tune_trials=N or "
                        "--set tune_budget_hours=H")
    if cfg.seeds:
        raise UserError("a tuning sweep takes no seeds axis: the chosen setting of each configuration is trained "
                        "with tune_seeds seeds (--set tune_seeds=3); remove seeds")
    for multi, single in SWEEP_KEYS.items():
        if single in cfg.tune_space and getattr(cfg, multi):
            raise UserError(f"{single} is both tuned (tune_space) and swept ({multi}); keep one of them")


def untuned(cfg):
    """The configuration without its tuning block (what a run records: a run trains one setting)."""
    return cfg.replace(**{k: KEYS[k].default for k in TUNE_KEYS})


def configurations(cfg) -> list:
    """(name, Config) of every configuration: the sweep's grid without the tuning block, named as a sweep names
    its runs."""
    return plan_grid(untuned(cfg))


def trial_name(configuration: str, number: int) -> str:
    return f"{configuration}/trial-{number:03d}"


def final_plan(cfg, out: Path | None = None) -> list:
    """The runs a tuning sweep compares: per configuration, its chosen setting (read from the trial folders under
    `out`; the untuned values while none has finished) with seeds seed+1 ... seed+tune_seeds."""
    check_tuning(cfg)
    plan = []
    for name, conf in configurations(cfg):
        best = chosen_trial(Path(out), name, cfg.tune_space) if out is not None else None
        params = best["params"] if best else {}
        for k in range(cfg.tune_seeds):
            seed = conf.seed + 1 + k
            plan.append((f"{name}-best-s{seed}", merge(conf, {**params, "seed": seed}, "the chosen trial")))
    return plan


def runs_named(cfg, names: list[str], out: Path) -> list[str]:
    """`retrain`'s names with each configuration's name standing for its chosen setting's runs (one per seed); a
    configuration without a finished trial has no chosen setting to retrain (UserError)."""
    confs = {name for name, _ in configurations(cfg)}
    runs = []
    for n in names:
        conf = n if n in confs else n.rsplit("-best-s", 1)[0]
        if conf in confs and chosen_trial(out, conf, cfg.tune_space) is None:
            raise UserError(f"{conf} has no finished trial in {out}, so no chosen setting to retrain; run the "
                            f"sweep's command again to tune it")
        runs += [f"{n}-best-s{cfg.seed + 1 + k}" for k in range(cfg.tune_seeds)] if n in confs else [n]
    return runs


# --- reading trials from their folders (no Optuna) ---------------------------------------------------------

def trial_folders(out: Path, configuration: str) -> list[Path]:
    from benchmark.runs.rundir import RUNS

    folder = Path(out) / RUNS / configuration
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("trial-") and p.name[6:].isdigit())


def read_trial(run_dir: Path, space: dict) -> dict:
    """One trial as its folder records it: number, status, tuned values, validation AUROC, epochs, seconds."""
    import yaml

    from benchmark.runs.rundir import HISTORY, REQUESTED, read_json, read_status

    status = read_status(run_dir)
    asked = {}
    if (run_dir / REQUESTED).is_file():
        asked = yaml.safe_load((run_dir / REQUESTED).read_text()) or {}
    history = val_history(run_dir / HISTORY)
    timing = read_json(run_dir / "timing.json", {}) or {}
    val = status.get("val_auroc")
    return {"number": int(run_dir.name[6:]), "dir": run_dir, "status": status.get("status", "missing"),
            "params": {k: asked.get(k) for k in space}, "val": val if is_finite(val) else None,
            "epochs": len(history), "history": history,
            "seconds": status.get("trial_seconds", timing.get("train_seconds"))}


def val_history(path: Path) -> list[tuple[int, float]]:
    """(epoch, validation AUROC) of each finished epoch in history.csv (epochs without a number left out)."""
    import csv

    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                epoch, val = int(row["epoch"]), float(row["val_auroc"])
            except (KeyError, TypeError, ValueError):
                continue
            if is_finite(val):
                rows.append((epoch, val))
    return rows


def is_finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def trials_of(out: Path, configuration: str, space: dict) -> list[dict]:
    return [read_trial(d, space) for d in trial_folders(out, configuration)]


def chosen_trial(out: Path, configuration: str, space: dict) -> dict | None:
    """The finished trial with the best validation mean AUROC (ties: the earlier one), or None."""
    done = [t for t in trials_of(out, configuration, space) if t["status"] == "done" and t["val"] is not None]
    return max(done, key=lambda t: (t["val"], -t["number"])) if done else None


def expected_max(values: list[float], n: int) -> float:
    """The expected best of n trials drawn with replacement from these (Dodge et al. 2019, eq. 1): with the values
    sorted v(1) <= ... <= v(N), the sum of v(i) * ((i/N)^n - ((i-1)/N)^n)."""
    v = sorted(values)
    big_n = len(v)
    return float(sum(x * ((i / big_n) ** n - ((i - 1) / big_n) ** n) for i, x in enumerate(v, 1)))

"""`retrain`: train some runs of a finished (or interrupted) sweep again, with the sweep's configuration plus
overrides, and rebuild its report.

The previous run folder is kept under a dated name (`runs/<name>.previous-YYYYmmdd-HHMMSS`) unless `--discard`;
the new run records what was asked of it (`requested.yaml`) and the overrides (`retrain.json`), so that the sweep
knows it was changed on purpose. Locking, resume and failure isolation are the sweep's: the runs go through the
same launcher, and an interrupted retrain resumes with the same command (a run folder that already holds this
retrain's `retrain.json` is resumed, not moved aside again).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmark.config import SWEEP_KEYS, merge, parse_set
from benchmark.errors import UserError
from benchmark.runs.ownership import FolderLock, claim, expect_kind, is_ours, kind_of
from benchmark.runs.rundir import (
    REQUESTED,
    RETRAIN,
    RUNS,
    SWEEP_CONFIG,
    read_config,
    read_json,
    read_status,
    write_config,
    write_json,
)
from benchmark.sweep.contract import Launcher
from benchmark.sweep.launchers import check_launcher, make_launcher

FIXED_KEYS = {"backbone", *SWEEP_KEYS.values(), *SWEEP_KEYS}  # what names a run: not changed by a retrain


def retrain(sweep: str | os.PathLike, names: list[str], sets: list[str] | None = None, discard: bool = False,
            gpus: str | None = None, launcher: Launcher | None = None, where: dict | None = None) -> int:
    """Retrain the named runs of a sweep folder; returns the sweep's exit code (0, 1 if a run failed, 130 if
    stopped). `where` changes where they run (backend, ray_address), not what they train."""
    from benchmark.runs.plan import plan_runs
    from benchmark.sweep.run import finish_sweep, prepare_caches
    from benchmark.sweep.scheduler import Scheduler

    out = Path(sweep)
    hint = "retrain runs of a sweep made by `python -m benchmark sweep`"
    expect_kind(out, ("sweep",), "a sweep folder", hint)
    cfg = read_config(out, SWEEP_CONFIG)
    if cfg is None:
        raise UserError(f"{out} has no {SWEEP_CONFIG}; {hint}")
    if where:
        cfg = cfg.replace(**{k: v for k, v in where.items() if v is not None})
    if launcher is None:
        check_launcher(cfg, gpus)
    overrides = parse_set(sets)
    fixed = sorted(set(overrides) & FIXED_KEYS)
    if fixed:
        raise UserError(f"retrain cannot change {', '.join(fixed)}: it names the run; add a run of that setting "
                        f"with a new sweep (--out) instead")
    plan = dict(plan_runs(cfg, out))  # a tuning sweep's: each configuration's chosen setting, read from its trials
    if cfg.tune_space is not None:
        from benchmark.runs.plan import runs_named

        names = runs_named(cfg, names, out)
    unknown = [n for n in names if n not in plan]
    if unknown:
        raise UserError(f"{out} has no run {unknown[0]!r}; its runs are: {', '.join(plan)}")
    with FolderLock(out, "sweep"):
        check_same_data(out, cfg, plan)  # before anything is set aside
        chosen = []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for name in dict.fromkeys(names):
            run_cfg = merge(plan[name], overrides, "--set") if overrides else plan[name]
            run_dir = out / RUNS / name
            record = read_json(run_dir / RETRAIN)
            resuming = (record is not None and record.get("overrides") == overrides
                        and read_status(run_dir).get("status") != "done")
            if run_dir.exists() and not resuming:
                _set_aside(run_dir, stamp, discard)
            claim(run_dir, "run", "a run directory", f"move it out of {out / RUNS}")
            if not resuming:
                write_config(run_dir, run_cfg, REQUESTED)
                previous = None if discard else f"{name}.previous-{stamp}"
                write_json(run_dir / RETRAIN, {"overrides": overrides, "previous": previous,
                                               "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            chosen.append((name, run_cfg))
        all_runs = list(plan.items())
        launcher = launcher or make_launcher(cfg, gpus)
        try:
            prepare_caches(cfg, chosen)
            print(f"retraining {len(chosen)} run(s) of {out}: {', '.join(n for n, _ in chosen)}"
                  + (f" with {', '.join(f'{k}={v}' for k, v in overrides.items())}" if overrides else ""), flush=True)
            scheduler = Scheduler(out, chosen, launcher, cfg.run_timeout, total=len(all_runs),
                                  index={name: i for i, (name, _) in enumerate(all_runs, 1)})
            scheduler.run()
        finally:
            launcher.close()
        if scheduler.interrupted:
            print("interrupted; the same command resumes the stopped runs", flush=True)
            return 130
        return finish_sweep(out, all_runs, cfg)


def check_same_data(out: Path, cfg, plan: dict) -> None:
    """Refuse (nothing touched) when the data differ from those the sweep recorded in its fingerprint.json: a
    retrained run beside the others would put two versions of the data into one report."""
    from benchmark.input.prepare import data_fingerprint
    from benchmark.runs.fingerprint import differences
    from benchmark.runs.rundir import SWEEP_FINGERPRINT

    saved = (read_json(out / SWEEP_FINGERPRINT) or {}).get("data")
    if not saved:
        return  # a sweep of a version that recorded no data fingerprint
    diff = differences({"data": saved}, {"data": data_fingerprint(cfg, sorted({r.image_size for r in plan.values()}))})
    if diff:
        raise UserError(f"{out}: the data changed since its runs were trained ({'; '.join(diff[:3])}); nothing was "
                        f"retrained, as the report would mix two versions of the data. Restore the data, or run a "
                        f"new sweep (--out) on the changed data")


def _set_aside(run_dir: Path, stamp: str, discard: bool) -> None:
    """The previous run: kept under a dated name, or deleted with --discard (only a folder cxr-bench made)."""
    from benchmark.runs.ownership import remove_ours
    if kind_of(run_dir) != "run":
        raise UserError(f"{run_dir} was not made by cxr-bench; it is left as it is (move it away to retrain)")
    with FolderLock(run_dir, "run"):  # not while its training still runs
        pass
    if discard:
        if is_ours(run_dir):
            remove_ours(run_dir)
        else:
            raise UserError(f"{run_dir} has no cxr-bench marker (an earlier version's run); --discard deletes "
                            f"only folders that carry it: retrain without --discard to keep it aside")
        return
    run_dir.rename(run_dir.with_name(f"{run_dir.name}.previous-{stamp}"))

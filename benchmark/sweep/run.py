"""The sweep: every run of a profile's grid (backbones x policies x fine-tuning modes x image sizes x seeds),
each through a launcher (`benchmark.sweep.launchers`: a child process per run), sharing one decode-once image cache
built here first.

A failed run is recorded (status.json, summary.csv) and the sweep goes on; the exit code says something failed.
Interrupted (Ctrl-C, SIGTERM), the sweep stops its runs, which record themselves as interrupted; the same command
resumes: finished runs are skipped, an interrupted run continues from its last epoch. A run that takes longer than
`run_timeout` is stopped and recorded as failed. With --gpus, runs go in parallel, one per GPU; with `backend: ray`,
to a Ray cluster (`benchmark.sweep.ray_launcher`). The report is rebuilt at the end, from the runs of the current plan
only.

The sweep folder is locked while a sweep works in it, and re-running a sweep into it with a changed profile (or
changed data) is refused before anything is touched: runs of two settings are never mixed in one report.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from benchmark.config import SWEEP_KEYS, Config
from benchmark.errors import UserError
from benchmark.runs.fingerprint import config_part, differences
from benchmark.runs.ownership import FolderLock, claim
from benchmark.runs.plan import plan_runs
from benchmark.runs.run import Run
from benchmark.runs.rundir import (
    RUNS,
    SWEEP_CONFIG,
    SWEEP_FINGERPRINT,
    SWEEP_STATUS,
    read_config,
    read_json,
    write_config,
    write_json,
)
from benchmark.sweep.contract import Launcher
from benchmark.sweep.launchers import check_launcher, make_launcher
from benchmark.sweep.scheduler import Scheduler, _num, fmt_time


def prepare_caches(cfg: Config, runs) -> None:
    """Decode the images once per image size before any run starts (no TensorFlow in this process)."""
    from benchmark.input.prepare import prepare

    for size in sorted({r.image_size for _, r in runs}):
        t0 = time.perf_counter()
        prepared = prepare(cfg.replace(image_size=size, **{k: () for k in SWEEP_KEYS}))
        print(f"image cache at {size} px ready ({len(prepared.cache.files)} images, "
              f"{time.perf_counter() - t0:.1f} s): {prepared.cache.path}", flush=True)


def claim_sweep(out: Path) -> Path:
    return claim(out, "sweep", "a sweep folder", "choose another --out (a missing or empty folder)")


def check_unchanged(out: Path, cfg: Config, data: dict | None = None) -> None:
    """Refuse (UserError, nothing touched) a sweep folder whose recorded profile or data differ from these."""
    saved = read_json(out / SWEEP_FINGERPRINT)
    if saved is None:
        old = read_config(out, SWEEP_CONFIG)
        if old is None:
            return
        saved = {"config": config_part(old, sweep=True)}
    new = {"config": config_part(cfg, sweep=True)}
    if data is not None:
        new["data"] = data
    diff = differences(saved, new)
    if diff:
        shown = "; ".join(diff[:5]) + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "")
        raise UserError(f"{out} holds a sweep of other settings or data ({shown}); nothing was changed. Use a new "
                        f"--out for these settings, or retrain the runs that should change: python -m benchmark "
                        f"retrain --sweep {out} RUN [RUN ...] --set key=value")


def run_sweep(cfg: Config, out: str | os.PathLike, gpus: str | None = None,
              launcher: Launcher | None = None) -> int:
    """Plan, build the cache, run every unfinished run through `launcher` (default: local processes, one per
    GPU of `gpus`), then build the report and print the summary. Returns 1 if any run failed, 130 if stopped."""
    runs = plan_runs(cfg, Path(out))
    if not runs:
        raise UserError("the sweep has no runs")
    if launcher is None:
        check_launcher(cfg, gpus)
    from benchmark.input.cache import check_cache_dir

    check_cache_dir(cfg.cache_dir)  # a file named as the cache is refused before the sweep folder is touched
    if cfg.tune_space is not None:  # Optuna, before anything is touched
        from benchmark.sweep.tune import import_optuna

        import_optuna()
    out = claim_sweep(Path(out))
    with FolderLock(out, "sweep"):
        check_unchanged(out, cfg)
        from benchmark.input.prepare import data_fingerprint

        data = data_fingerprint(cfg, sorted({r.image_size for _, r in runs}))
        check_unchanged(out, cfg, data)
        check_finished_runs(out, runs)
        write_config(out, cfg, SWEEP_CONFIG)
        write_json(out / SWEEP_FINGERPRINT, {"config": config_part(cfg, sweep=True), "data": data})
        print(f"sweep {out}: {len(runs)} run(s): {', '.join(n for n, _ in runs)}", flush=True)
        if cfg.dataset == "phantom":
            print("data: the SYNTHETIC phantom data set (not real patients)", flush=True)
        launcher = launcher or make_launcher(cfg, gpus)  # before decoding: an unreachable cluster fails fast
        try:
            if launcher.describe():
                print(launcher.describe(), flush=True)
            prepare_caches(cfg, runs)
            start = time.perf_counter()
            scheduler, todo = None, runs
            if cfg.tune_space is not None:  # the trials first; then each configuration's chosen setting per seed
                from benchmark.sweep.tune import run_trials

                scheduler, todo = run_trials(out, cfg, launcher)
                runs = plan_runs(cfg, out)
            if scheduler is None or not scheduler.interrupted:
                scheduler = Scheduler(out, todo, launcher, cfg.run_timeout, on_done=mlflow_logger(out, cfg),
                                      total=len(runs), index={name: i for i, (name, _) in enumerate(runs, 1)})
                scheduler.run()
        finally:
            launcher.close()
        if scheduler.interrupted:
            print(f"interrupted after {fmt_time(time.perf_counter() - start)}; the stopped runs resume with the "
                  f"same command", flush=True)
            print_summary(out, runs)
            return 130
        print(f"all runs ended in {fmt_time(time.perf_counter() - start)}; building the report ...", flush=True)
        return finish_sweep(out, runs, cfg)


def mlflow_logger(out: Path, cfg: Config):
    """With `mlflow` set: a function that logs a finished run to MLflow from the sweep's own process (one writer
    to the store, never the runs themselves); a failure to log is a warning, not a failed run."""
    if not cfg.mlflow:
        return None

    def log(run_dir: Path) -> None:
        from reports.runs import load_run
        from reports.tracking import log_runs

        try:
            log_runs(out, [load_run(run_dir, 0)], None if cfg.mlflow is True else str(cfg.mlflow),
                     experiment=cfg.name if cfg.name != "run" else out.resolve().name)
        except Exception as exc:  # the run is safe on disk; `report --mlflow` logs it later
            print(f"warning: {run_dir.name} was not logged to MLflow ({type(exc).__name__}: {exc})", file=sys.stderr)
    return log


def check_finished_runs(out: Path, runs) -> None:
    """A finished run is skipped only if it trained what the plan asks (or what a retrain asked of it)."""
    for name, run_cfg in runs:
        run = Run(out / RUNS / name)
        run_dir, saved = run.path, run.fingerprint
        if not run.status.done or saved is None:
            continue
        asked = run.requested or run_cfg
        diff = differences({"config": saved.get("config", {})}, {"config": config_part(asked)})
        if diff:
            raise UserError(f"{run_dir} is finished but trained other settings than it was asked to "
                            f"({'; '.join(diff[:3])}); retrain it (python -m benchmark retrain --sweep {out} "
                            f"{name}), or use a new --out")


def finish_sweep(out: Path, runs, cfg: Config) -> int:
    """Build the report, print the summary table, write sweep_status.json; 1 if any run failed."""
    report = None
    try:
        from reports.build import build_report

        report = build_report(out, bootstrap=cfg.bootstrap, plan=[name for name, _ in runs], mlflow=cfg.mlflow)
    except Exception as exc:  # the runs are safe on disk; the report can be rebuilt with `report`
        print(f"warning: the report could not be built ({type(exc).__name__}: {exc}); "
              f"rebuild it with: python -m benchmark report --sweep {out}", file=sys.stderr)
    failed = print_summary(out, runs)
    if report:
        print(f"report: {report}")
    write_json(out / SWEEP_STATUS, {"runs": len(runs), "failed": failed})
    return 1 if failed else 0


def print_summary(out: Path, runs) -> int:
    print()
    print(f"{'run':28s} {'status':8s} {'val AUROC':>10s} {'test AUROC':>11s}")
    failed = 0
    for name, _ in runs:
        st = Run(out / RUNS / name).status
        status = st.state
        failed += status != "done"
        print(f"{name:28s} {status:8s} {_num(st.val_auroc):>10s} {_num(st.test_auroc):>11s}"
              + (f"  {st.raw.get('error', '')[:80]}" if status != "done" else ""))
    return failed

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
import re
import sys
import time
from pathlib import Path

from benchmark.config import SWEEP_KEYS, Config
from benchmark.errors import UserError
from benchmark.runs.fingerprint import config_part, differences
from benchmark.runs.ownership import FolderLock, claim
from benchmark.runs.plan import plan_runs
from benchmark.runs.rundir import (
    FINGERPRINT,
    PROGRESS,
    REQUESTED,
    RETRAIN,
    RUNS,
    SWEEP_CONFIG,
    SWEEP_FINGERPRINT,
    SWEEP_STATUS,
    TRAIN_LOG,
    read_config,
    read_json,
    read_status,
    write_config,
    write_json,
    write_status,
)
from benchmark.sweep.contract import Job, Launcher
from benchmark.sweep.launchers import check_launcher, make_launcher

STOP_GRACE_S = 60  # how long a stopped run may take to record itself and exit before it is killed

# lines of our own in a run's log that a sweep echoes (epochs come from RUN/progress.json, not from Keras's output)
OWN_LINES = re.compile(r"^(.*test mean AUROC.*|resuming .*|error: .*|running on node .*)$")


def fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


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
        run_dir = out / RUNS / name
        saved = read_json(run_dir / FINGERPRINT)
        if read_status(run_dir).get("status") != "done" or saved is None:
            continue
        asked = read_config(run_dir, REQUESTED) or run_cfg
        diff = differences({"config": saved.get("config", {})}, {"config": config_part(asked)})
        if diff:
            raise UserError(f"{run_dir} is finished but trained other settings than it was asked to "
                            f"({'; '.join(diff[:3])}); retrain it (python -m benchmark retrain --sweep {out} "
                            f"{name}), or use a new --out")


class Scheduler:
    """The sweep's loop: hands pending runs to the launcher as it has room, echoes their progress lines, and
    records each run's result (a run that ended without status done is recorded as failed with its error)."""

    def __init__(self, out: Path, runs, launcher: Launcher, run_timeout: float | None = None,
                 total: int | None = None, index: dict | None = None, on_done=None):
        self.out, self.runs, self.launcher, self.run_timeout = out, runs, launcher, run_timeout
        self.on_done = on_done  # called with a finished run's folder, in this process (e.g. the MLflow logger)
        self.interrupted = False
        self.total = total or len(runs)  # the plan's size, and each run's place in it (a retrain runs a few)
        self.index = index or {name: i for i, (name, _) in enumerate(runs, 1)}
        self.pending: list[Job] = []
        self.running: list[Job] = []
        self.durations: list[float] = []
        self.offsets: dict = {}
        self.epochs_shown: dict = {}

    def _queue(self) -> None:
        for name, run_cfg in self.runs:
            i = self.index[name]
            run_dir = self.out / RUNS / name
            if read_status(run_dir).get("status") == "done":
                print(f"[{i}/{self.total}] {name}: finished earlier, skipped", flush=True)
                continue
            claim(run_dir, "run", "a run directory", f"move it out of {self.out / RUNS}")
            if not (run_dir / RETRAIN).is_file():  # a retrained run keeps what the retrain asked of it
                write_config(run_dir, run_cfg, REQUESTED)
            self.pending.append(Job(i, name, run_dir))

    def run(self) -> None:
        """Run every pending run; on Ctrl-C or SIGTERM, stop the running ones and wait for them to record
        themselves as interrupted (`self.interrupted` is then set)."""
        self._queue()
        try:
            while self.pending or self.running:
                while self.pending and len(self.running) < self.launcher.capacity:
                    self._start(self.pending.pop(0))
                time.sleep(0.5)
                for job in list(self.running):
                    self._echo_progress(job)
                    self._enforce_timeout(job)
                    code = self.launcher.poll(job)
                    if code is not None:
                        self._echo_progress(job)
                        self.running.remove(job)
                        self._record(job, code)
        except KeyboardInterrupt:
            self.interrupted = True
            self._stop_all()

    def _enforce_timeout(self, job: Job) -> None:
        if not self.run_timeout or getattr(job, "began", None) is None:
            return
        elapsed = time.perf_counter() - job.began
        if elapsed > self.run_timeout and not getattr(job, "timed_out", None):
            job.timed_out = time.perf_counter()
            print(f"[{job.index}/{self.total}] {job.name}: no end after run_timeout={self.run_timeout:g} s; "
                  f"stopping it", flush=True)
            self.launcher.stop(job)
        elif getattr(job, "timed_out", None) and time.perf_counter() - job.timed_out > STOP_GRACE_S:
            self.launcher.stop(job, force=True)  # it did not answer SIGTERM

    def _stop_all(self) -> None:
        """Stop the running runs (they record themselves as interrupted), wait for them, kill those that hang."""
        for job in self.running:
            print(f"[{job.index}/{self.total}] {job.name}: stopping", flush=True)
            self.launcher.stop(job)
        deadline = time.monotonic() + STOP_GRACE_S
        while True:
            try:
                for job in list(self.running):
                    code = self.launcher.wait(job, max(0.0, min(1.0, deadline - time.monotonic())))
                    if code is None and time.monotonic() >= deadline:
                        self.launcher.stop(job, force=True)
                        code = self.launcher.wait(job, 10)
                    if code is not None or time.monotonic() >= deadline:
                        self.running.remove(job)
                        if read_status(job.run_dir).get("status") not in ("done", "interrupted"):
                            write_status(job.run_dir, "interrupted",
                                         error="stopped with the sweep; the same command resumes it")
                break
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, end them now
                deadline = time.monotonic()

    def _start(self, job: Job) -> None:
        log = job.run_dir / TRAIN_LOG
        self.offsets[job.name] = log.stat().st_size if log.is_file() else 0
        job.started = time.perf_counter()
        # the timer counts from the run's start: at once for a local process; on a launcher that queues runs
        # (Ray), from the "running on node" line its task writes to the log when it begins
        job.began = None if getattr(self.launcher, "queues", False) else job.started
        self.launcher.start(job)
        print(f"[{job.index}/{self.total}] {job.name}: training{job.where} (log: {log})", flush=True)
        self.running.append(job)

    def _record(self, job: Job, code: int) -> None:
        seconds = time.perf_counter() - job.started
        self.durations.append(seconds)
        status = read_status(job.run_dir)
        # the child's status.json is authoritative: a run that recorded itself done is done, even if it ended in
        # the timer's last window or hung at exit and was stopped
        if getattr(job, "timed_out", None) and status.get("status") != "done":
            error = (f"stopped after run_timeout={self.run_timeout:g} s without finishing (hung, or too slow: raise "
                     f"run_timeout); the same command retries it")
            write_status(job.run_dir, "failed", error=error, exit_code=code)
            print(f"[{job.index}/{self.total}] {job.name}: FAILED after {fmt_time(seconds)}: {error}", flush=True)
            return
        if status.get("status") != "done":
            error = status.get("error") or last_error(job.run_dir / TRAIN_LOG) or f"exit code {code}"
            write_status(job.run_dir, "failed", error=error, exit_code=code)
            print(f"[{job.index}/{self.total}] {job.name}: FAILED after {fmt_time(seconds)}: {error}", flush=True)
            return
        left = len(self.pending) + len(self.running)
        eta = (sum(self.durations) / len(self.durations)) * left / max(1, self.launcher.capacity)
        print(f"[{job.index}/{self.total}] {job.name}: done in {fmt_time(seconds)}, test mean AUROC "
              f"{_num(status.get('test_auroc'))}" + (f"; about {fmt_time(eta)} left" if left else ""), flush=True)
        if self.on_done is not None:
            self.on_done(job.run_dir)

    def _echo_progress(self, job: Job) -> None:
        """Print the new lines of the run's log that say where it is (epochs, scores, errors)."""
        path = job.run_dir / TRAIN_LOG
        if not path.is_file():
            return
        with open(path, "rb") as fh:
            fh.seek(self.offsets[job.name])
            chunk = fh.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self.offsets[job.name] += end + 1
        for line in chunk[:end].decode(errors="replace").splitlines():
            line = line.strip()
            if getattr(job, "began", 0) is None and line.startswith("running on node"):
                job.began = time.perf_counter()
            if OWN_LINES.match(line) and not line.startswith("/"):
                print(f"    [{job.index} {job.name}] {line}", flush=True)
        self._echo_epoch(job)

    def _echo_epoch(self, job: Job) -> None:
        """One line per finished epoch, from the progress file the run writes (benchmark.train.callbacks.Progress)."""
        progress = read_json(job.run_dir / PROGRESS) or {}
        epoch = progress.get("epoch")
        if not epoch or self.epochs_shown.get(job.name) == epoch:
            return
        self.epochs_shown[job.name] = epoch
        scores = "  ".join(f"{k} {progress[k]:.4f}" for k in ("loss", "val_auroc", "learning_rate") if k in progress)
        seconds = f"  ({progress['epoch_seconds']:.0f} s)" if "epoch_seconds" in progress else ""
        print(f"    [{job.index} {job.name}] epoch {epoch}/{progress.get('epochs', '?')}  {scores}{seconds}",
              flush=True)


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


def last_error(log: Path) -> str | None:
    """The last line of a run's log that looks like an error (or its last line)."""
    if not log.is_file():
        return None
    lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or re.match(r"^[A-Za-z_.]+(Error|Exception)\b", line):
            return line[:300]
    return lines[-1][:300] if lines else None


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"


def print_summary(out: Path, runs) -> int:
    print()
    print(f"{'run':28s} {'status':8s} {'val AUROC':>10s} {'test AUROC':>11s}")
    failed = 0
    for name, _ in runs:
        st = read_status(out / RUNS / name)
        status = st.get("status", "missing")
        failed += status != "done"
        print(f"{name:28s} {status:8s} {_num(st.get('val_auroc')):>10s} {_num(st.get('test_auroc')):>11s}"
              + (f"  {st.get('error', '')[:80]}" if status != "done" else ""))
    return failed

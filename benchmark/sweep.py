"""The sweep: every run of a profile's grid (backbones x policies x fine-tuning modes x image sizes x seeds),
each through a launcher (`benchmark.launchers`: a child process per run), sharing one decode-once image cache
built here first.

A failed run is recorded (status.json, summary.csv) and the sweep goes on; the exit code says something failed.
Interrupted, the same command resumes: finished runs are skipped, an interrupted run continues from its last
epoch. With --gpus, runs go in parallel, one per GPU. The report is rebuilt at the end.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from benchmark.config import SWEEP_KEYS, Config, grid, run_name
from benchmark.errors import UserError
from benchmark.launchers import Job, Launcher, LocalLauncher
from benchmark.rundir import (REQUESTED, RUNS, SWEEP_CONFIG, SWEEP_STATUS, TRAIN_LOG, read_status,
                              write_config, write_json, write_status)

PROGRESS = re.compile(r"^(Epoch \d+/\d+|.*val_auroc.*|.*test mean AUROC.*|resuming .*|error: .*)$")


def plan_runs(cfg: Config) -> list[tuple[str, Config]]:
    """(run name, config) for every point of the grid; names use only the keys that vary."""
    runs = grid(cfg)
    varying = {single for multi, single in SWEEP_KEYS.items()
               if len({repr(getattr(r, single)) for r in runs}) > 1}
    named = [(run_name(r, varying), r) for r in runs]
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        named = [(f"{n}-{i}", r) for i, (n, r) in enumerate(named)]
    return named


def fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def prepare_caches(cfg: Config, runs) -> None:
    """Decode the images once per image size before any run starts (no TensorFlow in this process)."""
    from benchmark.prepare import prepare

    for size in sorted({r.image_size for _, r in runs}):
        t0 = time.perf_counter()
        prepared = prepare(cfg.replace(image_size=size, **{k: () for k in SWEEP_KEYS}))
        print(f"image cache at {size} px ready ({len(prepared.cache.files)} images, "
              f"{time.perf_counter() - t0:.1f} s): {prepared.cache.path}", flush=True)


def run_sweep(cfg: Config, out: str | os.PathLike, gpus: str | None = None,
              launcher: Launcher | None = None) -> int:
    """Plan, build the cache, run every unfinished run through `launcher` (default: local processes, one per
    GPU of `gpus`), then build the report and print the summary. Returns 1 if any run failed."""
    out = Path(out)
    runs = plan_runs(cfg)
    if not runs:
        raise UserError("the sweep has no runs")
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg, SWEEP_CONFIG)
    print(f"sweep {out}: {len(runs)} run(s): {', '.join(n for n, _ in runs)}", flush=True)
    if cfg.dataset == "phantom":
        print("data: the SYNTHETIC phantom data set (not real patients)", flush=True)
    prepare_caches(cfg, runs)
    launcher = launcher or LocalLauncher([g.strip() for g in gpus.split(",")] if gpus else None)
    start = time.perf_counter()
    try:
        Scheduler(out, runs, launcher).run()
    finally:
        launcher.close()
    print(f"all runs ended in {fmt_time(time.perf_counter() - start)}; building the report ...", flush=True)
    return finish_sweep(out, runs, cfg)


class Scheduler:
    """The sweep's loop: hands pending runs to the launcher as it has room, echoes their progress lines, and
    records each run's result (a run that ended without status done is recorded as failed with its error)."""

    def __init__(self, out: Path, runs, launcher: Launcher):
        self.out, self.runs, self.launcher = out, runs, launcher
        self.total = len(runs)
        self.pending: list[Job] = []
        self.running: list[Job] = []
        self.durations: list[float] = []
        self.offsets: dict = {}

    def _queue(self) -> None:
        for i, (name, run_cfg) in enumerate(self.runs, 1):
            run_dir = self.out / RUNS / name
            if read_status(run_dir).get("status") == "done":
                print(f"[{i}/{self.total}] {name}: finished earlier, skipped", flush=True)
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            write_config(run_dir, run_cfg, REQUESTED)
            self.pending.append(Job(i, name, run_dir))

    def run(self) -> None:
        self._queue()
        try:
            while self.pending or self.running:
                while self.pending and len(self.running) < self.launcher.capacity:
                    self._start(self.pending.pop(0))
                time.sleep(0.5)
                for job in list(self.running):
                    self._echo_progress(job)
                    code = self.launcher.poll(job)
                    if code is not None:
                        self._echo_progress(job)
                        self.running.remove(job)
                        self._record(job, code)
        except KeyboardInterrupt:
            for job in self.running:
                self.launcher.stop(job)
            raise

    def _start(self, job: Job) -> None:
        log = job.run_dir / TRAIN_LOG
        self.offsets[job.name] = log.stat().st_size if log.is_file() else 0
        job.started = time.perf_counter()
        self.launcher.start(job)
        print(f"[{job.index}/{self.total}] {job.name}: training{job.where} (log: {log})", flush=True)
        self.running.append(job)

    def _record(self, job: Job, code: int) -> None:
        seconds = time.perf_counter() - job.started
        self.durations.append(seconds)
        status = read_status(job.run_dir)
        if code != 0 or status.get("status") != "done":
            error = status.get("error") or last_error(job.run_dir / TRAIN_LOG) or f"exit code {code}"
            write_status(job.run_dir, "failed", error=error, exit_code=code)
            print(f"[{job.index}/{self.total}] {job.name}: FAILED after {fmt_time(seconds)}: {error}", flush=True)
            return
        left = len(self.pending) + len(self.running)
        eta = (sum(self.durations) / len(self.durations)) * left / max(1, self.launcher.capacity)
        print(f"[{job.index}/{self.total}] {job.name}: done in {fmt_time(seconds)}, test mean AUROC "
              f"{_num(status.get('test_auroc'))}" + (f"; about {fmt_time(eta)} left" if left else ""), flush=True)

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
            if PROGRESS.match(line) and not line.startswith("/"):
                print(f"    [{job.index} {job.name}] {line}", flush=True)


def finish_sweep(out: Path, runs, cfg: Config) -> int:
    """Build the report, print the summary table, write sweep_status.json; 1 if any run failed."""
    report = None
    try:
        from reports.build import build_report

        report = build_report(out, bootstrap=cfg.bootstrap)
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

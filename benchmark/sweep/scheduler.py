"""The sweep's scheduler: runs handed to a launcher a few at a time, their progress echoed from their files,
timeouts enforced, results recorded, Ctrl-C and SIGTERM passed on (used by the sweep, retrain and tuning)."""


from __future__ import annotations

import re
import time
from pathlib import Path

from benchmark.runs.ownership import claim
from benchmark.runs.rundir import (
    PROGRESS,
    REQUESTED,
    RETRAIN,
    RUNS,
    TRAIN_LOG,
    read_json,
    read_status,
    write_config,
    write_status,
)
from benchmark.sweep.contract import Job, Launcher

STOP_GRACE_S = 60  # how long a stopped run may take to record itself and exit before it is killed

# lines of our own in a run's log that a sweep echoes (epochs come from RUN/progress.json, not from Keras's output)
OWN_LINES = re.compile(r"^(.*test mean AUROC.*|resuming .*|error: .*|running on node .*)$")


def fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


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

"""TEMPLATE: a sweep launcher (copy this file, then edit the TODOs). docs/extending.md, "A sweep launcher".

A launcher decides *where* each run executes; what runs is always the run contract (benchmark/sweep/contract.py):
`child_command(run_dir)` with `child_environment()`, its output appended to RUN/train.log. The sweep's Scheduler
(benchmark/sweep/scheduler.py) plans, echoes progress from RUN/progress.json, enforces run_timeout and records
results from RUN/status.json, whatever the launcher, so a launcher only starts, polls and stops processes.

This one starts each run as a local child process behind an optional wrapper command, `PREFIX`. With
`PREFIX = ("srun", "--ntasks=1", "--gres=gpu:1", "--exclusive")` inside a SLURM allocation (salloc / sbatch) each
run is a job step on a GPU SLURM picks: srun stays in the foreground while the step runs (so `poll` is the
process's exit code) and passes SIGTERM on to the step (so `stop` lets the run record itself interrupted). A
scheduler without such a foreground command (`sbatch` alone) needs `poll` and `stop` written against its queue
(squeue / scancel). tests/test_templates.py runs this very file through the Scheduler.

Plugging it in:
- Python API: `benchmark.sweep.run.run_sweep(cfg, out, launcher=SubprocessLauncher.from_config(cfg))`.
- `--launcher NAME` / `launcher: NAME`: two lines of our source. Put this file where Python finds it (e.g.
  `benchmark/sweep/subprocess_launcher.py`), add `"NAME": "benchmark.sweep.subprocess_launcher:SubprocessLauncher"`
  to `LAUNCHERS` in benchmark/sweep/launchers.py (imported only when a sweep asks for it), and add "NAME" to the
  `LAUNCHERS` tuple near the top of benchmark/config.py (the `launcher` key's choices; the configuration cannot
  read the sweep's table, which sits above it in the layer contract).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from benchmark.errors import UserError
from benchmark.runs.rundir import TRAIN_LOG
from benchmark.sweep.contract import Job, Launcher, child_command, child_environment, die_with_parent

PREFIX: tuple = ()  # TODO: the wrapper each run starts under, e.g. ("srun", "--ntasks=1", "--gres=gpu:1", "--exclusive")
CAPACITY = 1  # TODO: runs at a time (with srun: the GPUs your allocation holds)


class SubprocessLauncher(Launcher):
    """Each run a child process, started through `PREFIX`, `capacity` at a time."""

    @classmethod
    def check(cls, cfg, gpus: str | None = None) -> None:
        """Refuse, before the sweep folder is touched, what this launcher cannot run: a one-line UserError."""
        if gpus is not None:  # TODO: keep or drop: here the wrapper (SLURM) places runs on GPUs, not --gpus
            raise UserError(f"--gpus {gpus} does not apply to this launcher: {PREFIX[0] if PREFIX else 'it'} "
                            f"places the runs; set CAPACITY in {__file__} instead")
        if PREFIX and shutil.which(PREFIX[0]) is None:
            raise UserError(f"{PREFIX[0]} is not on PATH; run the sweep inside your scheduler's allocation, or "
                            f"use --launcher local")

    @classmethod
    def from_config(cls, cfg, gpus: str | None = None) -> "SubprocessLauncher":
        # TODO: read what you need from cfg (a Config). Adding a configuration key is a field in benchmark/config.py.
        return cls(capacity=CAPACITY, prefix=PREFIX)

    def __init__(self, capacity: int = 1, prefix: tuple = ()):
        self.capacity = capacity  # the Scheduler keeps at most this many runs started and not yet ended
        self.prefix = tuple(prefix)

    def describe(self) -> str:
        # printed once when the sweep starts ("" prints nothing)
        return f"launcher: {self.capacity} run(s) at a time" + (f" through {' '.join(self.prefix)}" if self.prefix
                                                                 else "")

    def command(self, job: Job) -> list[str]:
        # TODO: anything per run (a job name, a log of your scheduler's own) goes here; the run contract stays last
        return [*self.prefix, *child_command(job.run_dir)]

    def start(self, job: Job) -> None:
        # Must not block: the Scheduler starts up to `capacity` runs, then polls them all every half second.
        # parent=os.getpid(): the run ends when this sweep process is gone (even after kill -9), so a resumed sweep
        # never finds a stale run still writing to the folder.
        env = child_environment(parent=os.getpid())
        job.where = f" through {self.prefix[0]}" if self.prefix else ""  # shown in "[1/4] NAME: training..."
        with open(job.run_dir / TRAIN_LOG, "ab") as log:  # appended: a resumed run keeps its earlier log
            job.handle = subprocess.Popen(self.command(job), stdout=log, stderr=subprocess.STDOUT, env=env,
                                          preexec_fn=die_with_parent)

    def poll(self, job: Job) -> int | None:
        # None while the run goes on, else its exit code. The result itself is read from RUN/status.json: a run
        # that exits 0 without recording "done" is still recorded failed.
        return job.handle.poll()

    def stop(self, job: Job, force: bool = False) -> None:
        # SIGTERM lets the run save "interrupted" (the same command resumes it after its last epoch); force is for
        # a run that did not answer within the Scheduler's grace period. Return at once: the Scheduler waits.
        if job.handle.poll() is None:
            job.handle.kill() if force else job.handle.terminate()

    def close(self) -> None:
        # TODO: release what the launcher holds (a cluster connection, an allocation); local processes hold nothing
        pass

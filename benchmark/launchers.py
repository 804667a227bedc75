"""Where a sweep's runs execute: the launcher seam. A launcher starts a run, polls it, and stops it; the sweep's
loop (`benchmark.sweep`) plans, schedules, follows each run's log and records results, whatever the launcher.

Every launcher runs the same child process per run, the **run contract**:

    python -m benchmark train --config RUN/requested.yaml --out RUN

with the image cache already built (the environment variable CXR_BENCH_CACHE_BUILT=1), its output appended to
RUN/train.log, and its result in RUN/status.json (`done`, or `failed` with the error; see `benchmark.rundir`). A
child per run means each run gets a fresh TensorFlow whose memory (GPU included) is freed when it ends, and a run
that crashes takes nothing else down.

`LocalLauncher` (processes on this machine, optionally one per GPU) is the default; `RayLauncher`
(`benchmark.ray_launcher`, `backend: ray`) hands each run to a Ray cluster; another backend implements `Launcher`
(see docs/extending.md).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.processes import PARENT_ENV
from benchmark.rundir import REQUESTED, TRAIN_LOG

CACHE_BUILT = "CXR_BENCH_CACHE_BUILT"  # set for a sweep's runs: their image caches exist already


def child_command(run_dir: Path) -> list[str]:
    """The run contract's command line for one run directory."""
    return [sys.executable, "-m", "benchmark", "train", "--config", str(run_dir / REQUESTED), "--out", str(run_dir)]


def child_environment(extra: dict | None = None, parent: int | None = None) -> dict:
    """The run contract's environment: the cache is built; with `parent`, the child ends when that process is
    gone (see benchmark.processes.watch_parent)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               **{CACHE_BUILT: "1"})
    if parent:
        env[PARENT_ENV] = str(parent)
    env.update(extra or {})
    return env


@dataclass
class Job:
    """One run handed to a launcher: its place in the sweep, its folder, and what the launcher keeps about it."""

    index: int
    name: str
    run_dir: Path
    slot: object = None  # the launcher's resource (a GPU id), if it has any
    where: str = ""  # shown in the progress lines ("on GPU 1", "on node ...")
    started: float = field(default_factory=time.perf_counter)
    handle: object = None


class Launcher:
    """The seam a sweep runs through: `capacity` runs at a time, each started, polled and stopped one by one."""

    capacity: int = 1

    def start(self, job: Job) -> None:
        """Start the run contract for `job` (non-blocking); set job.handle (and job.where)."""
        raise NotImplementedError

    def poll(self, job: Job) -> int | None:
        """None while the run goes on, else its exit code."""
        raise NotImplementedError

    def stop(self, job: Job, force: bool = False) -> None:
        """Ask the run to stop (SIGTERM: it records itself interrupted and may resume later), or with `force` end
        it at once (SIGKILL: for a run that does not answer); returns at once."""
        raise NotImplementedError

    def wait(self, job: Job, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for the run to end; its exit code, or None if it still runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.poll(job)
            if code is not None:
                return code
            time.sleep(0.1)
        return self.poll(job)

    def describe(self) -> str:
        """One line on where the runs go, printed when a sweep starts ("" says nothing)."""
        return ""

    def close(self) -> None:
        """Release what the launcher holds (nothing for local processes)."""


def check_backend(cfg, gpus: str | None = None) -> None:
    """Refuse (UserError) a backend this machine cannot use, before a sweep touches anything."""
    from benchmark.errors import UserError

    if cfg.launcher == "ray":
        if gpus:
            raise UserError("--gpus is for the local backend; on Ray each run asks for ray_gpus_per_run GPUs "
                            "(--set ray_gpus_per_run=1) and Ray places it")
        from benchmark.ray_launcher import import_ray

        import_ray(cfg.ray_address)


def make_launcher(cfg, gpus: str | None = None) -> "Launcher":
    """The launcher a configuration asks for: local processes (one per GPU of `gpus`), or Ray tasks."""
    check_backend(cfg, gpus)
    if cfg.launcher == "ray":
        from benchmark.ray_launcher import RayLauncher

        return RayLauncher(cfg.ray_address, cfg.ray_gpus_per_run, cfg.ray_cpus_per_run)
    return LocalLauncher([g.strip() for g in gpus.split(",")] if gpus else None)


def _die_with_parent():
    """Child processes end when the sweep is killed (even kill -9), so a resumed sweep finds no stale run."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalLauncher(Launcher):
    """Child processes on this machine: one at a time, or one per GPU (`gpus`, CUDA_VISIBLE_DEVICES)."""

    def __init__(self, gpus: list[str] | None = None):
        self.slots = list(gpus) if gpus else [None]
        self.capacity = len(self.slots)
        self.busy: set = set()

    def start(self, job: Job) -> None:
        job.slot = next(s for s in self.slots if s not in self.busy)
        self.busy.add(job.slot)
        env = child_environment({"CUDA_VISIBLE_DEVICES": job.slot} if job.slot is not None else None,
                                parent=os.getpid())
        job.where = f" on GPU {job.slot}" if job.slot is not None else ""
        with open(job.run_dir / TRAIN_LOG, "ab") as log:
            job.handle = subprocess.Popen(child_command(job.run_dir), stdout=log, stderr=subprocess.STDOUT, env=env,
                                          preexec_fn=_die_with_parent)

    def poll(self, job: Job) -> int | None:
        code = job.handle.poll()
        if code is not None:
            self.busy.discard(job.slot)
        return code

    def stop(self, job: Job, force: bool = False) -> None:
        if job.handle.poll() is None:
            job.handle.kill() if force else job.handle.terminate()

"""The launcher contract: what every launcher (local processes, Ray tasks, one a user adds) does, and the child
process it starts per run, the **run contract**:

    python -m benchmark train --config RUN/requested.yaml --out RUN

with the image cache already built (the environment variable CXR_BENCH_CACHE_BUILT=1), its output appended to
RUN/train.log, its progress in RUN/progress.json and its result in RUN/status.json (`done`, or `failed` with the
error; see `benchmark.runs.rundir`). A child per run means each run gets a fresh engine whose memory (GPU included) is
freed when it ends, and a run that crashes takes nothing else down.

The launchers themselves are listed in `benchmark.sweep.launchers.LAUNCHERS` and imported only when asked for.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.input.cache import CACHE_BUILT
from benchmark.runs.processes import PARENT_ENV
from benchmark.runs.rundir import REQUESTED


def child_command(run_dir: Path) -> list[str]:
    """The run contract's command line for one run directory."""
    return [sys.executable, "-m", "benchmark", "train", "--config", str(run_dir / REQUESTED), "--out", str(run_dir)]


def child_environment(extra: dict | None = None, parent: int | None = None) -> dict:
    """The run contract's environment: the cache is built; with `parent`, the child ends when that process is
    gone (see benchmark.runs.processes.watch_parent)."""
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

    @classmethod
    def check(cls, cfg, gpus: str | None = None) -> None:
        """Refuse (UserError) a configuration this launcher cannot run here, before a sweep touches anything."""

    @classmethod
    def from_config(cls, cfg, gpus: str | None = None) -> "Launcher":
        raise NotImplementedError


def die_with_parent():
    """Child processes end when the sweep is killed (even kill -9), so a resumed sweep finds no stale run."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass

"""Process liveness and lifetime: whether a process runs, and a watch that ends this process when the one that
started it is gone (so that children never outlive a killed parent, also where Linux's prctl is not available)."""

from __future__ import annotations

import os
import threading
import time

PARENT_ENV = "CXR_BENCH_PARENT_PID"  # set by a sweep for its runs: the process whose death ends them
POLL_S = 0.5


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine runs (a zombie does not; one we may not signal does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process stays a zombie until its parent reaps it
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def exit_when_gone(pid: int, poll: float = POLL_S) -> None:
    """Block until process `pid` is gone, then end this process at once (no clean-up: its parent is dead)."""
    while process_alive(pid):
        time.sleep(poll)
    os._exit(1)


def watch_parent() -> None:
    """If PARENT_ENV names a process, end this one when it is gone (a thread; returns at once)."""
    pid = os.environ.get(PARENT_ENV)
    if pid and pid.isdigit():
        threading.Thread(target=exit_when_gone, args=(int(pid),), name="parent-watch", daemon=True).start()

"""How many cores this process may use: one count for the decoders, the phantom writer, the pipeline and Ray's
private cluster (a scheduler's CPU affinity, as under SLURM, not the machine's count)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (a scheduler's CPU affinity, as under SLURM, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1

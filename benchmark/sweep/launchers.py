"""Where a sweep's runs execute. `LAUNCHERS` names each launcher as "module:Class", imported only when a sweep
asks for it (the `launcher` key): `local` (processes on this machine, optionally one per GPU) and `ray`
(`benchmark.sweep.ray_launcher`, tasks on a Ray cluster). Every launcher implements `benchmark.sweep.contract.Launcher`;
another one is a class and a line in the table (see docs/extending.md).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess

from benchmark.errors import UserError
from benchmark.runs.rundir import TRAIN_LOG
from benchmark.sweep.contract import Job, Launcher, child_command, child_environment, die_with_parent

LAUNCHERS = {"local": "benchmark.sweep.launchers:LocalLauncher", "ray": "benchmark.sweep.ray_launcher:RayLauncher"}

def parse_gpus(gpus: str | None) -> list[str] | None:
    """--gpus as its list of ids (CUDA_VISIBLE_DEVICES values: numbers or GPU-... UUIDs), each once; an empty
    entry, a repeat (two runs on one GPU: 0,0) or a character CUDA does not use is a UserError."""
    if gpus is None:
        return None
    ids = [g.strip() for g in str(gpus).split(",")]
    for g in ids:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", g):
            raise UserError(f"--gpus {gpus!r}: {g!r} is not a GPU id; give comma-separated ids such as 0,1")
    repeated = sorted({g for g in ids if ids.count(g) > 1})
    if repeated:
        raise UserError(f"--gpus {gpus!r} names GPU {repeated[0]} more than once; each GPU runs one run at a "
                        f"time: give each id once, e.g. --gpus {','.join(dict.fromkeys(ids))}")
    return ids


def launcher_class(name: str) -> type[Launcher]:
    """The launcher class a name in `LAUNCHERS` stands for (its module imported now)."""
    module, _, cls = LAUNCHERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def check_launcher(cfg, gpus: str | None = None) -> None:
    """Refuse (UserError) a launcher this machine cannot use, or a --gpus that is not a list of distinct ids,
    before a sweep touches anything."""
    parse_gpus(gpus)
    launcher_class(cfg.launcher).check(cfg, gpus)


def make_launcher(cfg, gpus: str | None = None) -> Launcher:
    """The launcher a configuration asks for (checked first)."""
    check_launcher(cfg, gpus)
    return launcher_class(cfg.launcher).from_config(cfg, gpus)


class LocalLauncher(Launcher):
    """Child processes on this machine: one at a time, or one per GPU (`gpus`, CUDA_VISIBLE_DEVICES)."""

    @classmethod
    def from_config(cls, cfg, gpus: str | None = None) -> "LocalLauncher":
        return cls(parse_gpus(gpus))

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
                                          preexec_fn=die_with_parent)

    def poll(self, job: Job) -> int | None:
        code = job.handle.poll()
        if code is not None:
            self.busy.discard(job.slot)
        return code

    def stop(self, job: Job, force: bool = False) -> None:
        if job.handle.poll() is None:
            job.handle.kill() if force else job.handle.terminate()

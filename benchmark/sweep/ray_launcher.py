"""Sweeps on Ray (an optional extra: `pip install -e .[ray]`): each run of the grid is a Ray task that asks for the
run's resources and, on its node, starts the run contract (`benchmark.sweep.contract`): the same child process as the
local runner, so that the run's TensorFlow and GPU memory are freed when it ends and its log, status, lock and resume
are exactly those of a local run. Run folders and the image cache must be on storage every node sees (a shared
`--out` and `cache_dir`); where no shared cache is given, each node decodes once into its own.

A node lost mid-run (its machine gone, its Ray processes killed) kills the run's child with it; Ray runs the task
again elsewhere (`max_retries`), and the run resumes from its last finished epoch. A task that finds its run
finished returns at once, so finished runs are never redone. Stopping the driver (Ctrl-C, SIGTERM) cancels the
tasks: each stops its child, which records itself as interrupted; the same command resumes.

Known traps handled here: Ray no longer hides GPUs from tasks that ask for none (CPU-only tasks get
CUDA_VISIBLE_DEVICES=""), `local_mode` is gone (a private cluster here is `ray_address: local`, bound to 127.0.0.1),
workers are reused (hence a child process per run), and `ray.init` replaces the SIGTERM handler (ours is put back,
so that a scheduler's SIGTERM stops the runs cleanly). The driver's CXR_BENCH_*, KERAS_*, TF_* and HF_* settings
and its working folder travel with each task (secrets such as HF_TOKEN in the task's runtime environment, never
among its arguments); run folders are resolved on the driver; `local` ignores $RAY_ADDRESS.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from benchmark.errors import UserError
from benchmark.runs.rundir import TRAIN_LOG
from benchmark.sweep.contract import Job, Launcher, child_command, child_environment, die_with_parent

INSTALL_HINT = "pip install -e .[ray]"
MAX_RETRIES = 3  # a task whose node is lost runs again this many times at most
STOP_GRACE_S = 60
LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray binds its private cluster to 127.0.0.1 only
FORWARDED = ("CXR_BENCH_", "KERAS_", "TF_", "PYTHONPATH", "HF_", "CUDA_VISIBLE_DEVICES")  # the driver's settings
NODE_LINE = "running on node"
SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY$", re.IGNORECASE)  # HF_TOKEN, AWS_SECRET_...


def task_environment(environ) -> tuple[dict, dict]:
    """The driver's settings each task gets: (plain, secret). The plain ones travel as the task's argument; the
    secrets (HF_TOKEN and the like) only in the task's runtime environment, which Ray puts into the worker's
    environment, never among the task's arguments (which Ray records and shows with the task)."""
    forwarded = {k: v for k, v in environ.items() if k.startswith(FORWARDED)}
    secret = {k: v for k, v in forwarded.items() if SECRET.search(k)}
    return {k: v for k, v in forwarded.items() if k not in secret}, secret


@contextlib.contextmanager
def _without(name: str):
    """`name` absent from the environment inside the block (ray.init reads $RAY_ADDRESS whatever it is told)."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def import_ray(address: str | None = None):
    """Ray, or a UserError with the install hint. For a private cluster here (`address` "local", or None without
    $RAY_ADDRESS), Ray is told first to keep it on 127.0.0.1 (it reads LOOPBACK when it is imported)."""
    if (address or os.environ.get("RAY_ADDRESS") or "local") == "local":
        os.environ.setdefault(LOOPBACK, "0")
    try:
        import ray
    except ImportError:
        raise UserError(f"--backend ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def run_contract(run_dir: str, gpus: float, env: dict, cwd: str) -> int:
    """The Ray task: the run contract on this node, its output appended to RUN/train.log; returns its exit code.
    Cancelling the task (KeyboardInterrupt here) or stopping its worker (SIGTERM: SystemExit) stops the child with
    SIGTERM and waits for it to record itself; a node that dies takes the child with it (PR_SET_PDEATHSIG)."""
    import ray

    run = Path(run_dir)
    node = ray.get_runtime_context().get_node_id()
    if not run.is_dir():
        raise FileNotFoundError(f"{run} is not on node {socket.gethostname()}: run folders must be on storage "
                                f"every node sees (a shared --out)")
    extra = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
    if not gpus:  # Ray no longer hides GPUs from tasks that ask for none
        extra["CUDA_VISIBLE_DEVICES"] = ""
    with open(run / TRAIN_LOG, "ab") as log:
        log.write(f"{NODE_LINE} {socket.gethostname()}/{node[:8]}\n".encode())
        log.flush()
        proc = subprocess.Popen(child_command(run), stdout=log, stderr=subprocess.STDOUT,
                                cwd=cwd if os.path.isdir(cwd) else None,
                                env=child_environment(extra, parent=os.getpid()), preexec_fn=die_with_parent)
        try:
            while True:  # in short waits: a cancel (KeyboardInterrupt) is not delivered inside a blocking wait
                try:
                    return proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
        except (KeyboardInterrupt, SystemExit):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


class RayLauncher(Launcher):
    """Runs go to a Ray cluster, one task per run. `address`: "auto" (the cluster this machine belongs to),
    HOST:6379 or ray://HOST:10001 (another), "local" (a private cluster here, on 127.0.0.1 only), or None
    ($RAY_ADDRESS, else "local")."""

    @classmethod
    def check(cls, cfg, gpus: str | None = None) -> None:
        if gpus:
            raise UserError("--gpus is for the local launcher; on Ray each run asks for ray_gpus_per_run GPUs "
                            "(--set ray_gpus_per_run=1) and Ray places it")
        import_ray(cfg.ray_address)

    @classmethod
    def from_config(cls, cfg, gpus: str | None = None) -> "RayLauncher":
        return cls(cfg.ray_address, cfg.ray_gpus_per_run, cfg.ray_cpus_per_run)

    def __init__(self, address: str | None = None, gpus_per_run: float | None = None, cpus_per_run: float = 1.0,
                 local_cpus: int | None = None):
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        ray = import_ray(address)
        self.ray = ray
        kwargs = dict(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        handler = signal.getsignal(signal.SIGTERM)
        t0 = time.perf_counter()
        try:
            if address == "local":  # a private loopback cluster, whatever $RAY_ADDRESS says
                from benchmark.cores import usable_cores

                # address="local": a new instance even where this machine runs a cluster already (without it,
                # ray.init joins the one named in /tmp/ray/ray_current_cluster, e.g. one a test or `ray start` left)
                with _without("RAY_ADDRESS"):
                    ray.init(address="local", num_cpus=local_cpus or usable_cores(), object_store_memory=100 * 2**20,
                             _node_ip_address="127.0.0.1", **kwargs)
            else:
                ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot reach the Ray cluster at {address!r} ({str(exc).splitlines()[0][:150]}); start "
                            f"it first (ray start --head on one machine, ray start --address=HEAD:6379 on the others: "
                            f"docs/ray.md) or use --ray-address local") from None
        finally:
            if handler is not None:
                signal.signal(signal.SIGTERM, handler)  # ray.init replaces it with sys.exit; ours stops runs cleanly
        self.connect_seconds = time.perf_counter() - t0
        self.address = address
        resources = ray.cluster_resources()
        self.gpus = gpus_per_run if gpus_per_run is not None else (1.0 if resources.get("GPU", 0) > 0 else 0.0)
        self.cpus = cpus_per_run
        self.env, secret = task_environment(os.environ)
        runtime = {"runtime_env": {"env_vars": secret}} if secret else {}
        self.task = ray.remote(run_contract).options(num_cpus=self.cpus, num_gpus=self.gpus,
                                                     max_retries=MAX_RETRIES, retry_exceptions=False, **runtime)

    queues = True  # a task may wait for resources: the sweep's run_timeout counts from its NODE_LINE

    @property
    def capacity(self) -> int:
        """How many runs the cluster holds at once now (a lost node lowers it; Ray queues the rest)."""
        r = self.ray.cluster_resources()
        if self.gpus:
            return max(1, int(r.get("GPU", 0) // self.gpus))
        return max(1, int(r.get("CPU", 0) // self.cpus)) if self.cpus else 10_000

    def describe(self) -> str:
        r = self.ray.cluster_resources()
        nodes = len([n for n in self.ray.nodes() if n.get("Alive")])
        return (f"Ray cluster ({self.address}): {nodes} node(s), {r.get('CPU', 0):g} CPUs, {r.get('GPU', 0):g} GPUs; "
                f"each run asks for {self.cpus:g} CPU(s) and {self.gpus:g} GPU(s)")

    def start(self, job: Job) -> None:
        # paths resolved here, on the driver: a worker's working folder is not the driver's
        job.handle = self.task.remote(str(Path(job.run_dir).resolve()), self.gpus, self.env, os.getcwd())
        job.where = " on the Ray cluster"

    def poll(self, job: Job) -> int | None:
        ready, _ = self.ray.wait([job.handle], timeout=0)
        if not ready:
            return None
        try:
            return int(self.ray.get(job.handle))
        except self.ray.exceptions.TaskCancelledError:
            return 130
        except self.ray.exceptions.RayError as exc:  # lost more often than it may be retried, or the worker crashed
            with open(job.run_dir / TRAIN_LOG, "a") as log:
                log.write(f"error: the Ray task failed: {type(exc).__name__}: {_first_line(exc)}\n")
            return 1

    def stop(self, job: Job, force: bool = False) -> None:
        try:
            self.ray.cancel(job.handle, force=force)
        except Exception:  # already finished
            pass

    def close(self) -> None:
        self.ray.shutdown()


def _first_line(exc: BaseException) -> str:
    """The cause of a Ray error in one line (Ray's own text starts with a traceback banner)."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:200]
    return (lines[-1] if lines else type(exc).__name__)[:200]

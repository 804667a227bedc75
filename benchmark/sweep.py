"""The sweep: every run of a profile's grid (backbones x policies x fine-tuning modes x image sizes x seeds),
each in its own process with a clean TensorFlow, sharing one decode-once image cache built here first.

A failed run is recorded (status.json, summary.csv) and the sweep goes on; the exit code says something failed.
Interrupted, the same command resumes: finished runs are skipped, an interrupted run continues from its last
epoch. With --gpus, runs go in parallel, one per GPU. The report is rebuilt at the end.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmark.config import SWEEP_KEYS, Config, dump_yaml, grid, run_name
from benchmark.errors import UserError
from benchmark.prepare import CACHE_BUILT
from benchmark.rundir import atomic_write_text, read_status, write_json, write_status

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


def _die_with_parent():
    """Child processes end when the sweep is killed (even kill -9), so a resumed sweep finds no stale run."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _prepare_cache(cfg: Config, runs) -> None:
    """Decode the images once per image size before any run starts (no TensorFlow in this process)."""
    from benchmark.prepare import prepare

    for size in sorted({r.image_size for _, r in runs}):
        t0 = time.perf_counter()
        prepared = prepare(cfg.replace(image_size=size, **{k: () for k in SWEEP_KEYS}))
        print(f"image cache at {size} px ready ({len(prepared.cache.files)} images, "
              f"{time.perf_counter() - t0:.1f} s): {prepared.cache.path}", flush=True)


def run_sweep(cfg: Config, out: str | os.PathLike, gpus: str | None = None) -> int:
    out = Path(out)
    runs = plan_runs(cfg)
    if not runs:
        raise UserError("the sweep has no runs")
    from models.registry import get_spec

    for _, r in runs:
        get_spec(r.backbone)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sweep.yaml", dump_yaml(cfg))
    total = len(runs)
    print(f"sweep {out}: {total} run(s): {', '.join(n for n, _ in runs)}", flush=True)
    if cfg.dataset == "phantom":
        print("data: the SYNTHETIC phantom data set (not real patients)", flush=True)
    _prepare_cache(cfg, runs)

    slots = [g.strip() for g in gpus.split(",")] if gpus else [None]
    pending = []
    for i, (name, run_cfg) in enumerate(runs, 1):
        run_dir = out / "runs" / name
        if read_status(run_dir).get("status") == "done":
            print(f"[{i}/{total}] {name}: finished earlier, skipped", flush=True)
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "requested.yaml", dump_yaml(run_cfg))
        pending.append((i, name, run_dir))

    running: dict = {}
    durations = []
    start = time.perf_counter()
    try:
        while pending or running:
            free = [s for s in slots if s not in {v["slot"] for v in running.values()}]
            while pending and free:
                i, name, run_dir = pending.pop(0)
                slot = free.pop(0)
                running[name] = _launch(i, name, run_dir, slot, total)
            time.sleep(0.5)
            for name, job in list(running.items()):
                _echo_progress(job)
                code = job["proc"].poll()
                if code is None:
                    continue
                _echo_progress(job)
                job["log"].close()
                seconds = time.perf_counter() - job["t0"]
                durations.append(seconds)
                del running[name]
                status = read_status(job["dir"])
                if code != 0 or status.get("status") != "done":
                    error = status.get("error") or _last_error(job["dir"] / "train.log") or f"exit code {code}"
                    write_status(job["dir"], "failed", error=error, exit_code=code)
                    print(f"[{job['i']}/{total}] {name}: FAILED after {_fmt_time(seconds)}: {error}", flush=True)
                else:
                    left = len(pending) + len(running)
                    eta = (sum(durations) / len(durations)) * left / max(1, len(slots))
                    print(f"[{job['i']}/{total}] {name}: done in {_fmt_time(seconds)}, test mean AUROC "
                          f"{_num(status.get('test_auroc'))}" + (f"; about {_fmt_time(eta)} left" if left else ""),
                          flush=True)
    except KeyboardInterrupt:
        for job in running.values():
            job["proc"].terminate()
        raise
    print(f"all runs ended in {_fmt_time(time.perf_counter() - start)}; building the report ...", flush=True)
    report = None
    try:
        from reports.build import build_report

        report = build_report(out, bootstrap=cfg.bootstrap)
    except Exception as exc:  # the runs are safe on disk; the report can be rebuilt with `report`
        print(f"warning: the report could not be built ({type(exc).__name__}: {exc}); "
              f"rebuild it with: python -m benchmark report --sweep {out}", file=sys.stderr)
    failed = _print_summary(out, runs)
    if report:
        print(f"report: {report}")
    write_json(out / "sweep_status.json", {"runs": total, "failed": failed})
    return 1 if failed else 0


def _launch(i, name, run_dir: Path, slot, total) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               **{CACHE_BUILT: "1"})
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot
    log = open(run_dir / "train.log", "ab")
    cmd = [sys.executable, "-m", "benchmark", "train", "--config", str(run_dir / "requested.yaml"), "--out", str(run_dir)]
    where = f" on GPU {slot}" if slot is not None else ""
    print(f"[{i}/{total}] {name}: training{where} (log: {run_dir / 'train.log'})", flush=True)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
    return {"i": i, "name": name, "dir": run_dir, "proc": proc, "log": log, "slot": slot,
            "t0": time.perf_counter(), "offset": (run_dir / "train.log").stat().st_size}


def _echo_progress(job) -> None:
    path = job["dir"] / "train.log"
    with open(path, "rb") as fh:
        fh.seek(job["offset"])
        chunk = fh.read()
    end = chunk.rfind(b"\n")
    if end < 0:
        return
    job["offset"] += end + 1
    for line in chunk[:end].decode(errors="replace").splitlines():
        line = line.strip()
        if PROGRESS.match(line) and not line.startswith("/"):
            print(f"    [{job['i']} {job['name']}] {line}", flush=True)


def _last_error(log: Path) -> str | None:
    if not log.is_file():
        return None
    lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or re.match(r"^[A-Za-z_.]+(Error|Exception)\b", line):
            return line[:300]
    return lines[-1][:300] if lines else None


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"


def _print_summary(out: Path, runs) -> int:
    print()
    print(f"{'run':28s} {'status':8s} {'val AUROC':>10s} {'test AUROC':>11s}")
    failed = 0
    for name, _ in runs:
        st = read_status(out / "runs" / name)
        status = st.get("status", "missing")
        failed += status != "done"
        print(f"{name:28s} {status:8s} {_num(st.get('val_auroc')):>10s} {_num(st.get('test_auroc')):>11s}"
              + (f"  {st.get('error', '')[:80]}" if status != "done" else ""))
    return failed

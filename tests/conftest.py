"""Shared fixtures: a tiny phantom made once per session, a private image cache, the ../shared data if present."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NIH_SAMPLE = SHARED / "nih-sample"
CHEXPERT_META = SHARED / "metadata" / "chexpert_train.csv.gz"
NIH_META = SHARED / "metadata" / "nih_Data_Entry_2017_v2020.csv.gz"
TEST_DATA = ROOT / "tests" / "data"

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside this checkout")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("image-cache")
    os.environ["CXR_BENCH_CACHE"] = str(path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return path


@pytest.fixture(scope="session")
def phantom(tmp_path_factory) -> Path:
    """A small phantom (300 images at 64 px); returns the CheXpert-v1.0-small folder."""
    from benchmark.phantom import FOLDER, make_phantom

    out = tmp_path_factory.mktemp("phantom")
    make_phantom(out, n=300, size=64, seed=3)
    return out / FOLDER


def run_cli(*args, cwd=ROOT, timeout=600, env=None) -> subprocess.CompletedProcess:
    """`python -m benchmark ARGS` in a fresh interpreter."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "benchmark", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def kill_9_when(args, state_file: Path, epochs_done: int, timeout: float) -> None:
    """Start `python -m benchmark ARGS`, wait until `state_file` (a checkpoint's state.json) records
    `epochs_done` epochs, or the command ends, or `timeout` s pass, then kill it with SIGKILL."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file() and json.loads(state_file.read_text()).get("epochs_done", 0) >= epochs_done:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def tiny_config(data_root, **changes):
    """The ci.yaml profile on a given phantom, with overrides."""
    from benchmark.config import load_config

    return load_config(ROOT / "configs" / "ci.yaml", dict(data_root=str(data_root), backbones=[], **changes))

"""Helpers the tests share: paths, running the CLI in a fresh interpreter, a tiny configuration, killing a command
mid-run, and the checks of a one-line error and of a run directory's contract."""

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
CI_PROFILE = ROOT / "configs" / "ci.yaml"
COMPETITION5 = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside this checkout")


def run_cli(*args, cwd=ROOT, timeout=600, env=None) -> subprocess.CompletedProcess:
    """`python -m benchmark ARGS` in a fresh interpreter."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "benchmark", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def train_args(out, data_root, *sets, backbone="mobilenet") -> list:
    """`train` on the ci.yaml profile, with `--set` overrides given as "key=value" strings."""
    args = ["train", "--config", CI_PROFILE, "--backbone", backbone, "--out", out, "--data-root", data_root]
    for item in sets:
        args += ["--set", item]
    return args


def start_cli(*args, env=None) -> subprocess.Popen:
    """`python -m benchmark ARGS` in the background (output discarded)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "benchmark", *map(str, args)], cwd=ROOT, env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_epochs(proc, state_file: Path, epochs_done: int, timeout: float) -> None:
    """Wait until `state_file` (a checkpoint's state.json) records `epochs_done` epochs, or `proc` ends, or
    `timeout` s pass."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if state_file.is_file() and json.loads(state_file.read_text()).get("epochs_done", 0) >= epochs_done:
                return
        except ValueError:  # being written
            pass
        time.sleep(0.05)


def kill_9_when(args, state_file: Path, epochs_done: int, timeout: float, env=None) -> None:
    """Start `python -m benchmark ARGS`, wait until `state_file` records `epochs_done` epochs, or the command
    ends, or `timeout` s pass, then kill it with SIGKILL."""
    proc = start_cli(*args, env=env)
    wait_for_epochs(proc, state_file, epochs_done, timeout)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def tiny_config(data_root, **changes):
    """The ci.yaml profile on a given phantom, with overrides."""
    from benchmark.config import load_config

    return load_config(CI_PROFILE, dict(data_root=str(data_root), backbones=[], **changes))


def one_line_error(result, *fragments) -> str:
    """Assert a command failed as bad input does: exit code 2, one line on stderr naming each fragment."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


RUN_FILES = {"config.yaml", "environment.json", "history.csv", "model.keras", "thresholds.json", "timing.json",
             "metrics.json", "predictions_val.csv", "predictions_test.csv", "status.json"}


def assert_run_contract(run_dir: Path, labels=COMPETITION5, epochs: int | None = None) -> dict:
    """A finished run directory holds every file of docs/run-directory.md, in the documented shape; returns its
    status."""
    import pandas as pd

    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}, sorted(p.name for p in run_dir.iterdir())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "done"
    pred = pd.read_csv(run_dir / "predictions_test.csv")
    assert list(pred.columns[:2]) == ["path", "patient"]
    assert [c for c in pred.columns if c.startswith("y_true_")] == [f"y_true_{lab}" for lab in labels]
    assert [c for c in pred.columns if c.startswith("y_prob_")] == [f"y_prob_{lab}" for lab in labels]
    assert pred[[f"y_prob_{lab}" for lab in labels]].stack().between(0, 1).all()
    hist = pd.read_csv(run_dir / "history.csv")
    if epochs is not None:
        assert hist["epoch"].tolist() == list(range(epochs))
    assert {"loss", "val_auroc", "learning_rate"} <= set(hist.columns)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"val", "test"} <= set(metrics) and set(metrics["test"]["summary"]["labels"]) == set(labels)
    return status


def write_pngs(folder, n):
    """n small non-square PNGs, each with its own grey level and a bright band."""
    import cv2
    import numpy as np

    files = []
    for i in range(n):
        img = np.full((40, 30), (i * 37) % 200, np.uint8)
        img[:, :6] = 255
        path = folder / f"{i}.png"
        cv2.imwrite(str(path), img)
        files.append(str(path))
    return files


FAULTS = ROOT / "tests" / "faults"


def fault_env(**faults) -> dict:
    """The environment for a command with faults injected (see tests/faults/sitecustomize.py)."""
    return {"PYTHONPATH": f"{FAULTS}{os.pathsep}{ROOT}", **{f"CXR_TEST_{k.upper()}": v for k, v in faults.items()}}


NO_TENSORFLOW = ROOT / "tests" / "no_tensorflow"


def engine_env(name: str, log: Path) -> dict:
    """The environment for a command on Keras's `name` backend with TensorFlow absent: any import of it fails, in
    the command and in every process it starts, and is recorded in `log` (which must stay absent)."""
    return {"KERAS_BACKEND": name, "PYTHONPATH": f"{NO_TENSORFLOW}{os.pathsep}{ROOT}",
            "CXR_TEST_TENSORFLOW_LOG": str(log)}


def tree_state(folder: Path) -> dict:
    """Every file under a folder with its size and modification time (to show that nothing was touched), but the
    lock files, which name whoever last held them."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def write_timm_resnet34(folder: Path, seed: int = 0) -> Path:
    """A timm ResNet34 checkpoint in the format of https://huggingface.co/timm/resnet34.a1_in1k (config.json and
    model.safetensors with PyTorch's parameter names and layouts), with random values: what a download gives,
    made here, offline."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}

    def conv(name, out_ch, in_ch, k):
        tensors[f"{name}.weight"] = (rng.normal(0, (2 / (in_ch * k * k)) ** 0.5, (out_ch, in_ch, k, k))
                                     .astype(np.float32))

    def bn(name, ch):
        tensors[f"{name}.weight"] = rng.uniform(0.5, 1.5, ch).astype(np.float32)
        tensors[f"{name}.bias"] = rng.normal(0, 0.1, ch).astype(np.float32)
        tensors[f"{name}.running_mean"] = rng.normal(0, 0.1, ch).astype(np.float32)
        tensors[f"{name}.running_var"] = rng.uniform(0.5, 1.5, ch).astype(np.float32)
        tensors[f"{name}.num_batches_tracked"] = np.array(100, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    in_ch = 64
    for stage, (blocks, ch) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            prefix = f"layer{stage}.{b}"
            conv(f"{prefix}.conv1", ch, in_ch if b == 0 else ch, 3)
            bn(f"{prefix}.bn1", ch)
            conv(f"{prefix}.conv2", ch, ch, 3)
            bn(f"{prefix}.bn2", ch)
            if b == 0 and stage > 1:
                conv(f"{prefix}.downsample.0", ch, in_ch, 1)
                bn(f"{prefix}.downsample.1", ch)
        in_ch = ch
    tensors["fc.weight"] = rng.normal(0, 0.01, (1000, 512)).astype(np.float32)
    tensors["fc.bias"] = np.zeros(1000, np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({
        "architecture": "resnet34", "num_classes": 1000, "num_features": 512, "global_pool": "avg",
        "pretrained_cfg": {"tag": "a1_in1k", "input_size": [3, 224, 224], "interpolation": "bicubic",
                           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 0.95,
                           "num_classes": 1000, "pool_size": [7, 7], "first_conv": "conv1", "classifier": "fc"}}))
    return folder


def write_keras_notop(path: Path, backbone: str) -> list:
    """A keras.applications no-top weights file in Keras's legacy HDF5 layout (as downloaded into
    ~/.keras/models), with a randomly initialised network's weights; returns them."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from models.registry import get_spec

    model = get_spec(backbone).build((224, 224, 3), None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, model)
    return model.get_weights()

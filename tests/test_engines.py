"""Keras's JAX and PyTorch backends: the backend-neutral input path, and train -> evaluate -> report with
TensorFlow absent from every process (tests/no_tensorflow makes any import of it fail)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from benchmark.config import load_config
from benchmark.runs.fingerprint import config_part
from tests.helpers import CI_PROFILE, assert_run_contract, engine_env, kill_9_when, one_line_error, run_cli, train_args

HAS_JAX = importlib.util.find_spec("jax") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed (pip install -e .[jax])")
# augmentation off on the CPU: XLA compiles the in-model affine transforms for ~30 s (seconds on a GPU)
FAST = ("augment=false", "bootstrap=0", "image_size=32")


def test_cache_batches_cover_every_row_once_per_epoch_in_an_order_set_by_seed_and_epoch():
    from benchmark.input.batches import CacheBatches

    images = np.arange(50 * 4 * 4, dtype=np.uint8).reshape(50, 4, 4)
    rows = np.arange(10, 47)
    targets = np.arange(len(rows), dtype=np.float32)[:, None]

    def epoch(ds):
        xs, ys = zip(*(ds[i] for i in range(len(ds))))
        return np.concatenate(xs), np.concatenate(ys)

    ds = CacheBatches(images, rows, targets, 8, shuffle=True, seed=3)
    assert len(ds) == 5  # 37 rows: four full batches and one of 5
    x0, y0 = epoch(ds)
    assert x0.shape == (37, 4, 4, 1) and x0.dtype == np.uint8
    assert sorted(y0[:, 0].astype(int)) == list(range(37))  # every row once
    np.testing.assert_array_equal(x0[:, 0, 0, 0], images[rows[y0[:, 0].astype(int)], 0, 0])  # image matches target
    ds.on_epoch_end()
    x1, y1 = epoch(ds)
    assert sorted(y1[:, 0]) == sorted(y0[:, 0]) and not np.array_equal(y0, y1)  # reshuffled
    resumed = CacheBatches(images, rows, targets, 8, shuffle=True, seed=3, first_epoch=1)
    np.testing.assert_array_equal(epoch(resumed)[1], y1)  # a resumed run sees the same batches
    capped = CacheBatches(images, rows, targets, 8, shuffle=True, seed=3, steps=2, drop_remainder=True)
    assert len(capped) == 2 and capped[1][0].shape[0] == 8
    with pytest.raises(IndexError):
        capped[2]
    plain = CacheBatches(images, rows, targets, 8)
    np.testing.assert_array_equal(epoch(plain)[1][:, 0], np.arange(37))  # unshuffled: the order given


def test_numpy_ten_crop_matches_the_tensorflow_one():
    from benchmark.input.batches import ten_crop as np_ten_crop
    from benchmark.input.pipeline import ten_crop as tf_ten_crop

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, 21, 21, 1), dtype=np.uint8)
    for mirror in (False, True):
        a, b = np_ten_crop(batch, mirror), tf_ten_crop(batch, mirror).numpy()
        assert a.shape == b.shape == ((10 if mirror else 5), 3, 21, 21, 1)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # the same crops; rounding of the resize aside


def test_the_engine_is_recorded_and_only_a_non_default_engine_changes_the_fingerprint(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    tf_cfg = load_config(CI_PROFILE)
    assert tf_cfg.keras_backend == "tensorflow"
    assert "keras_backend" not in config_part(tf_cfg)  # runs made before the key keep their fingerprint
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    jax_cfg = load_config(CI_PROFILE)
    assert jax_cfg.keras_backend == "jax" and config_part(jax_cfg)["keras_backend"] == "jax"
    assert load_config(CI_PROFILE, {"keras_backend": "torch"}).keras_backend == "torch"  # the key wins
    from benchmark.config import grid, run_name

    runs = grid(load_config(CI_PROFILE, {"backbones": ["mobilenet"], "keras_backends": ["tensorflow", "jax"]}))
    assert [run_name(r, {"keras_backend"}) for r in runs] == ["mobilenet-tensorflow", "mobilenet-jax"]


def test_a_bad_or_missing_engine_is_a_one_line_error(phantom, tmp_path):
    result = run_cli(*train_args(tmp_path / "a", phantom, "keras_backend=mxnet"))
    one_line_error(result, "keras_backend must be one of tensorflow, jax, torch", "mxnet")
    if not HAS_TORCH:
        result = run_cli(*train_args(tmp_path / "b", phantom, "keras_backend=torch"))
        one_line_error(result, "keras_backend torch needs torch", "pip install -e .[torch]")


# the settings of the JAX sweep, which the kill -9 test repeats for one run
JAX_SETS = (*FAST, "epochs=3", "steps_per_epoch=2", "early_stopping_patience=10", "schedule=constant")


@pytest.fixture(scope="module")
def jax_sweep(phantom, tmp_path_factory):
    """A sweep of two backbones under KERAS_BACKEND=jax with TensorFlow absent."""
    out = tmp_path_factory.mktemp("jax") / "sweep"
    log = out.parent / "tensorflow-imports.txt"
    args = ["sweep", "--config", CI_PROFILE, "--out", out, "--data-root", phantom]
    for item in (*JAX_SETS, "gradcam_images=1"):
        args += ["--set", item]
    return out, run_cli(*args, env=engine_env("jax", log), timeout=900), log


def assert_no_tensorflow(log):
    """Nothing tried to import TensorFlow (tests/no_tensorflow records every attempt, even a caught one)."""
    assert not log.exists(), log.read_text()[-3000:]


@needs_jax
@pytest.mark.slow
def test_jax_sweep_evaluate_and_report_without_tensorflow(jax_sweep):
    out, result, log = jax_sweep
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_no_tensorflow(log)
    for name in ("mobilenet", "resnet34"):
        run = out / "runs" / name
        assert_run_contract(run, epochs=3)
        environment = json.loads((run / "environment.json").read_text())
        assert environment["keras_backend"] == "jax" and environment["jax"] and "tensorflow" not in environment
        assert (run / "gradcam" / "gallery.json").is_file()  # Grad-CAM through jax.grad
    summary = pd.read_csv(out / "report" / "summary.csv")
    assert sorted(summary["run"]) == ["mobilenet", "resnet34"]
    assert summary["test_auroc_macro"].between(0, 1).all() and (summary["engine"] == "jax").all()
    run = out / "runs" / "mobilenet"
    before = pd.read_csv(run / "predictions_test.csv")
    result = run_cli("evaluate", "--run", run, "--tta", env=engine_env("jax", log), timeout=600)  # NumPy TenCrop
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_tensorflow(log)
    assert 0 <= json.loads(result.stdout)["auroc_macro"] <= 1
    tta = pd.read_csv(run / "predictions_test_tta.csv")
    assert len(tta) == len(before) and not np.allclose(tta.filter(like="y_prob_"), before.filter(like="y_prob_"))
    assert "test_tta" in json.loads((run / "metrics.json").read_text())


@needs_jax
@pytest.mark.slow
def test_jax_run_resumed_after_kill_9_predicts_as_one_never_killed(jax_sweep, phantom, tmp_path):
    out, result, _ = jax_sweep
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    whole = out / "runs" / "mobilenet"  # the same settings, never interrupted
    log = tmp_path / "tensorflow-imports.txt"
    env = engine_env("jax", log)
    sets = (*JAX_SETS, "gradcam_images=0")
    killed = tmp_path / "killed"
    state = killed / "checkpoint" / "state.json"
    kill_9_when(train_args(killed, phantom, *sets), state, epochs_done=2, timeout=400, env=env)
    done_before = json.loads(state.read_text())["epochs_done"]
    assert 2 <= done_before < 3, "the run finished before it could be killed"
    result = run_cli(*train_args(killed, phantom, *sets), env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming {killed} after epoch {done_before}" in result.stdout
    assert_run_contract(killed, epochs=3)
    np.testing.assert_allclose(pd.read_csv(killed / "history.csv")["loss"], pd.read_csv(whole / "history.csv")["loss"],
                               rtol=1e-5)
    a = pd.read_csv(whole / "predictions_test.csv").filter(like="y_prob_").to_numpy()
    b = pd.read_csv(killed / "predictions_test.csv").filter(like="y_prob_").to_numpy()
    np.testing.assert_allclose(b, a, atol=1e-5)
    assert_no_tensorflow(log)


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (pip install -e .[torch]; CI installs no "
                                          "PyTorch: its default wheel brings several GB of CUDA libraries)")
@pytest.mark.slow
def test_torch_trains_one_epoch_without_tensorflow(phantom, tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "tensorflow-imports.txt"
    result = run_cli(*train_args(out, phantom, *FAST, "epochs=1", "steps_per_epoch=2", "gradcam_images=1"),
                     env=engine_env("torch", log), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_tensorflow(log)
    assert_run_contract(out, epochs=1)
    assert json.loads((out / "environment.json").read_text())["keras_backend"] == "torch"


@needs_jax
@pytest.mark.slow
def test_perf_train_on_jax_beside_the_pytorch_reference(tmp_path):
    log = tmp_path / "tensorflow-imports.txt"
    args = ["perf", "train", "--backbone", "resnet34", "--engine", "jax", "--image-size", 32, "--batch-size", 4,
            "--steps", 2, "--json"]
    if not HAS_TORCH:
        one_line_error(run_cli(*args, "--reference", "torch", env=engine_env("jax", log), timeout=600),
                       "--reference torch needs PyTorch", "pip install -e .[torch]")
    result = run_cli(*args, *(["--reference", "torch"] if HAS_TORCH else []), env=engine_env("jax", log),
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["engine"] == "jax" and out["pipeline"] > 0 and out["in_memory"] > 0
    if HAS_TORCH:
        assert out["reference"]["images_per_s"] > 0 and "resnet34" in out["reference"]["source"]
        assert out["in_memory_vs_reference"] == pytest.approx(out["in_memory"] / out["reference"]["images_per_s"])
    assert_no_tensorflow(log)


def test_every_engine_implements_the_one_interface():
    """Each engine is one module behind `Engine`: listed in ENGINES, named as its backend, and (TensorFlow, in
    this process) able to set a run up and describe itself for environment.json."""
    import importlib

    from benchmark.config import Config
    from benchmark.engines import ENGINES, current
    from benchmark.engines.base import Engine

    assert set(ENGINES) == {"tensorflow", "jax", "torch"}
    for name, target in ENGINES.items():
        module, _, cls = target.partition(":")
        engine = getattr(importlib.import_module(module), cls)  # the module imports nothing of its engine
        assert issubclass(engine, Engine) and engine.name == name
        overridden = {m for m in ("gradient", "versions", "accelerator") if getattr(engine, m) is not getattr(Engine, m)}
        assert overridden == {"gradient", "versions", "accelerator"}, name
    engine = current()
    assert engine.name == "tensorflow" and engine.jit(Config(xla=False)) is False
    env = engine.environment()
    assert env["keras_backend"] == "tensorflow" and env["tensorflow"] and "hostname" not in env

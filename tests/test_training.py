"""Training: the run directory contract, every fine-tuning mode and loss, NaN handling, resume after kill -9,
the multi-device path, and a learnability bar that a scrambled pipeline cannot pass."""

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorflow")

from benchmark.errors import UserError  # noqa: E402
from benchmark.train.training import TrainingFailed, train_run  # noqa: E402
from tests.helpers import CI_PROFILE, assert_run_contract, kill_9_when, run_cli, tiny_config  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "mobilenet"
    cfg = tiny_config(phantom, backbone="mobilenet", epochs=2, learning_rate=0.003, augment=False, tensorboard=True)
    summary = train_run(cfg, out, log=lambda *a: None)
    return out, cfg, summary


def test_run_directory_contract(trained):
    out, cfg, summary = trained
    status = assert_run_contract(out, epochs=2)
    assert status["synthetic"] is True
    pred = pd.read_csv(out / "predictions_test.csv")
    assert set(pred["y_true_Edema"].dropna().unique()) <= {0, 1}
    timing = json.loads((out / "timing.json").read_text())
    assert timing["params"] > 3e6 and timing["flops"] > 0 and timing["train_images_per_s"] > 0
    assert timing["inference_ms_per_image"] > 0
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert set(thresholds["thresholds"]["Edema"]) == {"0.5", "youden", "f1", "spec90", "spec95", "sens90", "sens95"}
    env = json.loads((out / "environment.json").read_text())
    assert env["tensorflow"].startswith("2.") and "hostname" not in json.dumps(env).lower()
    assert (out / "gradcam" / "gallery.json").is_file()
    assert not (out / "config.json").exists()  # one configuration file per run: config.yaml
    assert summary["auroc_macro"] is not None


def test_inference_outputs_are_not_constant(trained):
    """The BatchNorm trap: with momentum 0.99 from scratch, inference-mode outputs are one constant."""
    out, _, _ = trained
    pred = pd.read_csv(out / "predictions_test.csv")
    probs = pred.filter(like="y_prob_").to_numpy()
    assert probs.std(axis=0).min() > 1e-3


def test_finished_run_is_not_retrained(trained):
    out, cfg, _ = trained
    before = (out / "model.keras").stat().st_mtime_ns
    train_run(cfg, out, log=lambda *a: None)
    assert (out / "model.keras").stat().st_mtime_ns == before


def test_a_finished_run_of_other_settings_or_data_is_refused_not_mixed(trained, phantom, tmp_path):
    out, cfg, _ = trained
    before = (out / "model.keras").stat().st_mtime_ns
    with pytest.raises(UserError, match=r"holds a run of other settings or data \(epochs 2 -> 3\); nothing was"):
        train_run(cfg.replace(epochs=3), out, log=lambda *a: None)
    assert (out / "model.keras").stat().st_mtime_ns == before
    import shutil

    data = tmp_path / "CheXpert-v1.0-small"
    shutil.copytree(phantom, data)
    small = tiny_config(data, backbone="mobilenet", epochs=1, steps_per_epoch=1, gradcam_images=0, bootstrap=0)
    train_run(small, tmp_path / "run", log=lambda *a: None)
    with open(data / "train.csv", "a") as fh:  # the label file changes under the finished run
        fh.write("\n")
    with pytest.raises(UserError, match=r"the label file .*train.csv changed"):
        train_run(small, tmp_path / "run", log=lambda *a: None)


@pytest.mark.parametrize("finetune,loss,policy", [("linear", "bce", "zeros"), ("gradual", "weighted_bce", "ones"),
                                                  ("full", "focal", "ignore"), ("baseline", "bce", "mixed")])
def test_finetune_modes_and_losses(phantom, tmp_path, finetune, loss, policy):
    import keras

    from benchmark.runs.rundir import STATE, RunState
    from benchmark.train.network import classifier_for

    # checkpoint/ kept: model.keras is the best epoch's, which may be gradual's first (backbone frozen); the last
    # epoch's model shows what trained
    cfg = tiny_config(phantom, backbone="mobilenet", finetune=finetune, loss=loss, policy=policy, epochs=2,
                      gradual_epochs=1, steps_per_epoch=3, gradcam_images=0, keep_checkpoint=True)
    train_run(cfg, tmp_path, log=lambda *a: None)
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "done"
    assert (tmp_path / "model.keras").is_file()
    state = RunState.load(tmp_path / STATE)
    model = keras.models.load_model(tmp_path / state.checkpoint if state.checkpoint else tmp_path / "model.keras")
    keras.utils.set_random_seed(cfg.seed)
    fresh = classifier_for(cfg, 5)
    trained_w = model.get_layer("backbone").get_weights()[0]
    fresh_w = fresh.get_layer("backbone").get_weights()[0]
    if finetune in ("linear", "baseline"):
        np.testing.assert_array_equal(trained_w, fresh_w)  # the backbone never trained
    else:
        assert not np.array_equal(trained_w, fresh_w)
    hist = tmp_path / "history.csv"
    epochs = 0 if finetune == "baseline" else 2
    assert (len(pd.read_csv(hist)) if hist.is_file() else 0) == epochs


def test_nan_loss_stops_and_is_recorded(phantom, tmp_path, monkeypatch):
    import keras

    import models.losses

    class NaNAfterFirstStep(keras.losses.Loss):
        """Finite on the first batch, NaN from then on (as an overflowing run would be)."""

        def __init__(self):
            super().__init__(name="nan_after_first_step")
            self.calls = keras.Variable(0.0, trainable=False)

        def call(self, y_true, y_pred):
            self.calls.assign_add(1.0)
            return keras.ops.mean(y_pred) * keras.ops.where(self.calls > 1, float("nan"), 1.0)

    monkeypatch.setattr(models.losses, "make_loss", lambda *a, **k: NaNAfterFirstStep())
    cfg = tiny_config(phantom, backbone="mobilenet", epochs=2, steps_per_epoch=3, gradcam_images=0)
    with pytest.raises(TrainingFailed, match="the loss became nan"):
        train_run(cfg, tmp_path, log=lambda *a: None)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and "lower learning_rate" in status["error"]


def test_resume_after_kill_9_with_a_mirrored_strategy_on_two_logical_cpus(phantom, tmp_path):
    """Killed with SIGKILL after two epochs, the same command resumes after the last finished one; on two logical
    CPUs, so that MirroredStrategy (the multi-GPU path) trains, saves and resumes too."""
    out = tmp_path / "run"
    args = ["train", "--config", CI_PROFILE, "--backbone", "mobilenet", "--out", out,
            "--data-root", phantom, "--set", "epochs=6", "--set", "steps_per_epoch=2", "--set", "gradcam_images=0",
            "--set", "early_stopping_patience=10", "--set", "logical_cpus=2"]
    state = out / "checkpoint" / "state.json"
    kill_9_when(args, state, epochs_done=2, timeout=300)
    saved = json.loads(state.read_text())
    done_before = saved["epochs_done"]
    assert 2 <= done_before < 6, "the run finished before it could be killed"
    assert json.loads((out / "status.json").read_text())["status"] == "running"
    named = {saved["checkpoint"], saved["best_weights"]}  # the committed epoch's files (others are uncommitted)
    assert all((out / f).is_file() for f in named)
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {out} after epoch {done_before}" in result.stdout
    hist = pd.read_csv(out / "history.csv")
    assert hist["epoch"].tolist() == list(range(6))  # every epoch once: none lost, none repeated
    assert json.loads((out / "timing.json").read_text())["epochs"] == 6
    assert json.loads((out / "status.json").read_text())["status"] == "done"
    assert not (out / "checkpoint").exists()  # the resume state is removed once the run is done
    env = json.loads((out / "environment.json").read_text())
    assert sum("CPU" in d for d in env["devices"]) == 2


def test_unknown_backbone_is_a_one_line_error(phantom, tmp_path):
    result = run_cli("train", "--config", CI_PROFILE, "--backbone", "vgg99", "--out", tmp_path,
                     "--data-root", phantom)
    assert result.returncode == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "backbone must be a registered backbone (" in err and "got 'vgg99'" in err


@pytest.fixture(scope="module")
def learn_phantom(tmp_path_factory):
    from benchmark.phantom import FOLDER, make_phantom

    out = tmp_path_factory.mktemp("learn")
    make_phantom(out, n=1000, size=64, seed=11)
    return out / FOLDER


def test_learnability_mobilenet_from_scratch(learn_phantom, tmp_path):
    """A pipeline that scrambles images and labels scores ~0.5 here; the real one clears the bar.

    It trains deterministically: with batches taken in the order their reads finish (the default), timing alone
    moved the best validation AUROC of these 5 epochs from scratch between 0.74 and 0.81."""
    cfg = tiny_config(learn_phantom, backbone="mobilenet", image_size=64, epochs=5, batch_size=16,
                      learning_rate=0.003, augment=False, gradcam_images=0, bootstrap=0, plateau_patience=2,
                      deterministic=True)
    summary = train_run(cfg, tmp_path, log=lambda *a: None)
    val = json.loads((tmp_path / "status.json").read_text())["val_auroc"]
    assert val >= 0.75, f"validation mean AUROC {val:.3f} after training"
    # the test split carries the report-mined (noisy) labels and ~70 images: a lower, looser bar than validation's
    assert summary["auroc_macro"] >= 0.65


def test_a_finished_run_keeps_its_model_without_optimiser_state_and_no_checkpoint(trained):
    out, cfg, _ = trained
    assert not (out / "checkpoint").exists()  # the resume state goes once the run is done
    params = json.loads((out / "timing.json").read_text())["params"]
    size = (out / "model.keras").stat().st_size
    assert size < 1.2 * 4 * params + 1_000_000, (size, params)  # the weights, not three times them


def test_a_full_disk_is_one_error_naming_the_folder_then_the_run_resumes(phantom, tmp_path, monkeypatch):
    import errno

    import benchmark.train.callbacks as callbacks

    real = callbacks.atomic_save_model

    def full(model, path, optimizer=False):
        if "epoch-0002" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(model, path, optimizer)

    monkeypatch.setattr(callbacks, "atomic_save_model", full)
    cfg = tiny_config(phantom, backbone="mobilenet", epochs=3, steps_per_epoch=2, gradcam_images=0,
                      early_stopping_patience=10)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"no space left on the device holding .*checkpoint .*resume"):
        train_run(cfg, run, log=lambda *a: None)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "no space left" in status["error"]
    assert not list((run / "checkpoint").glob(".*tmp*"))  # the failed save left no temporary file
    monkeypatch.setattr(callbacks, "atomic_save_model", real)  # space freed: the same command resumes
    train_run(cfg, run, log=lambda *a: None)
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]


def test_nan_predictions_with_a_finite_loss_stop_the_run_clearly(phantom, tmp_path, monkeypatch):
    import benchmark.evaluation.inference as inference

    monkeypatch.setattr(inference, "predict_probs", lambda model, images, rows, *a, **k: np.full((len(rows), 5),
                                                                                                  np.nan))
    cfg = tiny_config(phantom, backbone="mobilenet", epochs=2, steps_per_epoch=2, gradcam_images=0)
    with pytest.raises(TrainingFailed, match="validation predictions became NaN .* although the loss was finite"):
        train_run(cfg, tmp_path, log=lambda *a: None)


def test_a_validation_split_without_both_classes_is_refused_before_training(phantom, tmp_path):
    frame = pd.read_csv(phantom / "train.csv")
    frame = frame[frame["Frontal/Lateral"] == "Frontal"].head(60).copy()
    frame["patient"] = frame["Path"].str.extract(r"(patient\d+)")[0]
    frame["split"] = ["train"] * 30 + ["val"] * 15 + ["test"] * 15
    frame["Edema"] = [1, 0] * 15 + [0] * 15 + [1, 0] * 7 + [1]
    frame[["Path", "patient", "split", "Edema"]].to_csv(tmp_path / "labels.csv", index=False)
    result = run_cli("train", "--config", CI_PROFILE, "--backbone", "mobilenet", "--out", tmp_path / "run",
                     "--dataset", "csv", "--csv", tmp_path / "labels.csv", "--data-root", phantom.parent,
                     "--set", "patient_column=patient", "--set", "split_column=split", "--set", "labels=[Edema]")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: the validation split (15 images) has no label "
                                                             "with both positives and negatives")


def test_tensorboard_writes_loss_validation_auroc_and_learning_rate_per_epoch(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    out = trained[0]
    hist = pd.read_csv(out / "history.csv")
    seen = {}
    for part in ("train", "validation"):
        acc = EventAccumulator(str(out / "tensorboard" / part), size_guidance={"tensors": 0}).Reload()
        for tag in acc.Tags()["tensors"]:  # Keras 3 writes tensor events
            if tag.startswith("epoch_"):
                seen[f"{part}/{tag}"] = [float(make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
    assert seen["train/epoch_loss"] == pytest.approx(hist["loss"].tolist(), rel=1e-5)
    assert seen["validation/epoch_auroc"] == pytest.approx(hist["val_auroc"].tolist(), rel=1e-5)
    assert seen["train/epoch_learning_rate"] == pytest.approx(hist["learning_rate"].tolist(), rel=1e-5)


@pytest.mark.parametrize("setting", [{"precision": "mixed_bfloat16"}, {"xla": True}])
def test_the_gpu_settings_train_on_the_cpu_and_the_saved_model_predicts_the_same(phantom, tmp_path, setting):
    """Mixed precision and XLA, which every GPU run uses, run here first: a finite loss, probabilities in [0, 1],
    and a saved model that loads and predicts what the run predicted."""
    import keras

    from benchmark.evaluation.inference import load_model, predict_probs
    from benchmark.input.prepare import prepare

    cfg = tiny_config(phantom, backbone="mobilenet", epochs=1, steps_per_epoch=2, gradcam_images=0, bootstrap=0,
                      **setting)
    try:
        train_run(cfg, tmp_path, log=lambda *a: None)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(pd.read_csv(tmp_path / "history.csv")["loss"]).all()
    pred = pd.read_csv(tmp_path / "predictions_test.csv")
    probs = pred.filter(like="y_prob_").to_numpy()
    assert np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1
    data = prepare(cfg, log=None)
    if setting.get("precision"):
        keras.mixed_precision.set_global_policy(setting["precision"])
    try:
        again = predict_probs(load_model(tmp_path, 5), data.cache.images, data.splits["test"].rows, cfg.batch_size)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.abs(again - probs).max() < 2e-2  # bfloat16 keeps about 3 significant digits


def test_pretrained_runs_keep_their_batchnorm_statistics():
    from benchmark.config import Config
    from benchmark.train.training import reestimate_batches

    assert reestimate_batches(Config(weights=None)) == 10  # from scratch: re-estimated
    assert reestimate_batches(Config(weights="imagenet")) == 0  # pretrained: kept
    assert reestimate_batches(Config(weights={"default": None, "densenet121": "imagenet"})) == 0
    assert reestimate_batches(Config(weights="imagenet", bn_reestimate=True)) == 10  # unless asked
    assert reestimate_batches(Config(weights=None, bn_reestimate=False)) == 0

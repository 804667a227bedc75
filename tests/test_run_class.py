"""The run folder as a typed class (benchmark.runs.run.Run) and the rules for folders of earlier versions
(benchmark.runs.compat): the fields hold what the files hold, a folder that is not a run is refused with one line,
and a folder of an earlier layout (no layout line in its marker, no marker, old key names, files later versions
added missing) opens with the same fields. Run folders are fabricated (`perf report`'s writer), never trained."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.errors import UserError
from benchmark.runs import compat
from benchmark.runs.ownership import LAYOUT, MARKER, claim, kind_of, legacy_kind
from benchmark.runs.run import Run, Status


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    from benchmark.perf.report import fabricate

    out = claim(tmp_path_factory.mktemp("runs") / "sweep", "sweep", "a sweep folder", "")
    fabricate(out, runs=2, images=80, labels=3, n_boot=50)
    return out


def _run(fabricated, tmp_path, name="run00-densenet121"):
    target = tmp_path / "sweep"
    shutil.copytree(fabricated, target)
    return target / "runs" / name


def _json(path):
    return json.loads(path.read_text())


def test_the_fields_hold_what_the_files_hold(fabricated):
    folder = fabricated / "runs" / "run00-densenet121"
    run = Run.open(folder)
    assert run.path == folder and run.name == "run00-densenet121"
    assert run.kind == "run" and run.layout == LAYOUT and run.marker == ("run", LAYOUT)
    status = _json(folder / "status.json")
    assert run.status == Status.from_dict(status)
    assert run.status.state == "done" and run.status.done and run.status.synthetic is True
    assert run.status.test_auroc == status["test_auroc"] and run.status.error is None
    assert run.config_values == yaml.safe_load((folder / "config.yaml").read_text())
    assert run.config.backbone == "densenet121" and run.config.seed == 0  # a validated Config
    assert run.metrics == _json(folder / "metrics.json")
    thresholds = _json(folder / "thresholds.json")
    assert run.thresholds_file == thresholds and run.thresholds == thresholds["thresholds"]
    assert run.labels == thresholds["labels"]
    assert run.timing == _json(folder / "timing.json")
    pd.testing.assert_frame_equal(run.history, pd.read_csv(folder / "history.csv"))
    assert "_predictions" not in run.__dict__  # predictions are read only when asked for
    for split in ("val", "test"):
        pd.testing.assert_frame_equal(run.predictions(split), pd.read_csv(folder / f"predictions_{split}.csv"))
    assert run.predictions("test") is run.predictions("test")  # read once
    assert run.predictions("test_tta") is None and not run.has_predictions("test_tta")
    assert run.trained and not run.is_imported and run.imported is None
    assert run.external == {} and run.gallery == [] and run.model_card is None and run.export_perf == {}
    assert run.environment == {} and run.fingerprint is None and run.requested is None and not run.has_model
    assert run.synthetic is True


def test_the_reports_run_is_read_through_the_class(fabricated):
    from reports.runs import ReportRun, load_run

    folder = fabricated / "runs" / "run01-resnet34"
    r = load_run(folder, 10)
    assert isinstance(r, ReportRun) and isinstance(r.run, Run) and r.run.path == folder
    assert (r.name, r.dir, r.status, r.synthetic) == ("run01-resnet34", folder, "done", True)
    assert r.config == r.run.config_values and r.timing == r.run.timing
    assert r.labels == r.run.labels and r.thresholds == r.run.thresholds
    assert r.test_metrics == r.run.metrics["test"] and r.val_metrics == r.run.metrics["val"]
    assert r.protocol == r.run.metrics["protocol"]
    y = r.run.predictions("test")[[f"y_true_{lab}" for lab in r.labels]].to_numpy(dtype=float)
    np.testing.assert_array_equal(np.nan_to_num(r.test_y, nan=-1), np.nan_to_num(y, nan=-1))
    assert r.model_card["full"]["model"]["name"] == "run01-resnet34"  # made from the files: no card was written
    # the record also answers as a mapping, for code that takes any run (benchmark.evaluation.compare)
    assert r["name"] == r.name and r.get("external", {}) == {} and r.get("vs_reference") is None
    r["configuration"] = "c"
    assert r.configuration == "c" and "configuration" in r and "vs_reference" not in r
    with pytest.raises(KeyError):
        r["no such field"] = 1


def test_a_folder_that_is_not_a_run_is_refused_with_one_line(fabricated, tmp_path):
    user = tmp_path / "project"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    cases = {user: "a folder cxr-bench did not make, not a run directory",
             fabricated: "a sweep folder made by cxr-bench, not a run directory",
             tmp_path / "missing": "does not exist",
             user / "notes.txt": "is a file, not a run directory"}
    for path, words in cases.items():
        with pytest.raises(UserError) as caught:
            Run.open(path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and words in message, message
    assert (user / "notes.txt").read_text() == "mine" and sorted(p.name for p in user.iterdir()) == ["notes.txt"]


def test_a_trained_run_is_what_evaluate_reads(fabricated):
    from benchmark.evaluation.evaluate import _load_run, open_trained

    folder = fabricated / "runs" / "run00-densenet121"
    with pytest.raises(UserError, match="is not a trained run directory"):  # no model.keras: as before
        open_trained(folder)
    with pytest.raises(UserError, match="is not a trained run directory"):
        _load_run(folder)


def test_an_earlier_layout_opens_with_the_same_fields(fabricated, tmp_path):
    from reports.runs import load_run

    now = Run.open(fabricated / "runs" / "run00-densenet121")
    folder = _run(fabricated, tmp_path)
    # the first markers named the kind only (layout 1); old key names in config.yaml
    (folder / MARKER).write_text("run\n")
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text() + "backend: local\n")
    old = Run.open(folder)
    assert old.marker == ("run", 1) and old.layout == 1 and old.kind == "run"
    assert old.config.launcher == "local" and old.config_values["backend"] == "local"
    assert {k: v for k, v in old.config_values.items() if k != "backend"} == now.config_values
    for field in ("name", "metrics", "thresholds", "labels", "timing", "synthetic", "status"):
        assert getattr(old, field) == getattr(now, field), field

    # before markers: recognised by the files written together (ownership.legacy_kind, in compat)
    (folder / MARKER).unlink()
    assert Run.open(folder).marker is None and Run.open(folder).layout == 1 and kind_of(folder) == "run"
    assert legacy_kind(folder) == "run"

    # before metrics.json, thresholds.json's labels and status.json's synthetic: the report fills them in
    (folder / "metrics.json").unlink()
    thresholds = _json(folder / "thresholds.json")
    del thresholds["labels"]
    (folder / "thresholds.json").write_text(json.dumps(thresholds))
    status = _json(folder / "status.json")
    del status["synthetic"]
    (folder / "status.json").write_text(json.dumps(status))
    older = Run.open(folder)
    assert older.labels == now.labels  # from the predictions' columns
    assert older.status.synthetic is None and older.synthetic is False  # config.yaml says nih, not the phantom
    r, r_now = load_run(folder, 10), load_run(now.path, 10)
    assert r.labels == r_now.labels and r.status == "done"
    for lab in r.labels:  # scored again from the predictions (compat.split_metrics): the same counts and AUROCs
        again, saved = r.test_metrics["per_label"][lab], r_now.test_metrics["per_label"][lab]
        assert (again["n"], again["positives"]) == (saved["n"], saved["positives"])
        if saved["auroc"] is not None:  # (saved: None where fewer than min_positives positive patients)
            assert again["auroc"] == pytest.approx(saved["auroc"])


def test_the_compatibility_rules_one_by_one():
    assert compat.marker_layout(["run"]) == 1
    assert compat.marker_layout(["run", "layout 2", "made by cxr-bench"]) == 2
    assert compat.key_name("backend") == "launcher" and compat.key_name("seed") == "seed"
    assert compat.synthetic({}, {"dataset": "phantom"}) and not compat.synthetic({"synthetic": False},
                                                                                 {"dataset": "phantom"})
    assert compat.labels_from_columns(["path", "y_true_A", "y_prob_A", "y_prob_B"]) == ["A", "B"]
    assert compat.split_metrics({"test": {"x": 1}}, "test", lambda: 1 / 0) == {"x": 1}
    assert compat.split_metrics({}, "test", lambda: {"scored": True}) == {"scored": True}
    assert compat.model_card(None, lambda: {"made": True}) == {"made": True}
    assert compat.unit({}) == "image" and compat.unit({"unit": "study"}) == "study"
    assert compat.engine({}) == "tensorflow" and compat.engine({"keras_backend": "jax"}) == "jax"
    assert compat.min_positives([{}, {"min_positives": 5}]) == 5 and compat.min_positives([{}, None]) == 10
    assert compat.recorded_min_positives({}) == 10
    assert compat.bootstrap_requested(200) == 200
    assert compat.bootstrap_requested({"resamples": 50}) == 50
    assert compat.bootstrap_requested({"requested": 100, "resamples": 90}) == 100
    assert compat.unlocked_build_owner("0123456789abcdef0123.partial-host-a-42") == ("host-a", 42)
    assert compat.unlocked_build_owner("0123456789abcdef0123.partial-host") is None

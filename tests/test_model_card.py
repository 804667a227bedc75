"""The model card of a run: every field from the run's files, written when a run finishes and by `model-card`,
shown on the run's page, and without an absolute path in its public form."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmark.cli import main
from benchmark.evaluation.model_card import ABSOLUTE, INTENDED_USE, public_card
from tests.helpers import COMPETITION5

FIELDS = {"schema", "model", "data", "label_space", "training", "metrics", "subgroups", "external_results",
          "operating_points", "speed", "environment", "intended_use", "fingerprint", "references"}


def _strings(value):
    """Every key and string value of a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _assert_no_path(card, *folders):
    text = json.dumps(card)
    assert not any(str(f) in text for f in folders)
    assert [s for s in _strings(card) if ABSOLUTE.search(s)] == []


def test_a_finished_run_has_a_card_with_every_field_and_a_public_form_without_paths(sweep, phantom, tmp_path):
    out, _ = sweep
    run = out / "runs" / "mobilenet-32px"
    card = json.loads((run / "model_card.json").read_text())  # written when the run finished
    assert set(card) == FIELDS
    metrics = json.loads((run / "metrics.json").read_text())
    assert card["model"]["kind"] == "trained" and card["model"]["backbone"] == "mobilenet"
    assert card["model"]["parameters"] == json.loads((run / "timing.json").read_text())["params"] > 0
    assert card["data"]["dataset"] == "phantom" and card["data"]["synthetic"] is True
    assert card["data"]["protocol"] == metrics["protocol"] and card["data"]["data_root"] == str(phantom)
    assert card["label_space"]["labels"] == COMPETITION5 and card["label_space"]["uncertainty_policy"] == "mixed"
    assert card["training"]["epochs_requested"] == 2 and card["training"]["image_size"] == 32
    test = card["metrics"]["test"]
    assert test["auroc_macro"] == metrics["test"]["summary"]["auroc_macro"]
    assert test["auroc_macro_ci"] == metrics["test"]["summary"]["auroc_macro_ci"] and test["unit"] == "study"
    assert set(card["metrics"]["test_per_label"]) == set(COMPETITION5)
    assert card["metrics"]["validation"]["auroc_macro"] == metrics["val"]["summary"]["auroc_macro"]
    assert card["subgroups"].keys() == metrics["test"]["subgroups"].keys()
    assert card["external_results"] == {}  # ci.yaml has no external test set (the fabricated run below has one)
    assert card["operating_points"] == json.loads((run / "thresholds.json").read_text())
    assert card["environment"]["keras"] and card["intended_use"] == INTENDED_USE
    assert "clinical" in card["intended_use"]["out_of_scope"]
    assert card["fingerprint"] == json.loads((run / "fingerprint.json").read_text())

    public = public_card(card)
    _assert_no_path(public, phantom, out, tmp_path)
    assert public["data"]["data_root"] == "<redacted>"
    assert public["metrics"] == card["metrics"] and public["operating_points"] == card["operating_points"]
    assert set(public["fingerprint"]["data"]["label_files"].values()) == \
        set(card["fingerprint"]["data"]["label_files"].values())  # the hashes stay, the folders go


def test_the_card_is_on_the_run_page_and_redacted_in_the_public_report(sweep, phantom, tmp_path):
    from reports.build import build_report

    out, _ = sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.keras", "checkpoint", ".lock", "report*"))
    build_report(copy, bootstrap=20)
    build_report(copy, bootstrap=20, public=True)
    private = (copy / "report" / "mobilenet-32px.html").read_text()
    public = (copy / "report-public" / "mobilenet-32px.html").read_text()
    assert "<h2>Model card</h2>" in private and "research" in private and str(phantom) in private
    assert "<h2>Model card</h2>" in public and "(public form: no paths)" in public
    assert str(phantom) not in public and str(tmp_path) not in public


@pytest.fixture
def fabricated_run(tmp_path):
    """A fabricated finished run with an external test set and a configuration naming absolute paths."""
    from benchmark.perf.report import fabricate

    fabricate(tmp_path / "sweep", runs=2, images=300, labels=3, n_boot=20)
    run = tmp_path / "sweep" / "runs" / "run00-densenet121"
    with (run / "config.yaml").open("a") as fh:
        fh.write(f"data_root: {tmp_path}/nih\nweights: {tmp_path}/weights.h5\n")
    external = run / "external" / "chexpert"
    external.mkdir(parents=True)
    metrics = json.loads((run / "metrics.json").read_text())
    (external / "metrics.json").write_text(json.dumps({
        "test": metrics["test"], "synthetic": True, "protocol": None,
        "source": {"dataset": "chexpert", "label_file": "valid.csv", "split": "all", "images": 300,
                   "labels": {"Atelectasis": "Atelectasis"}}}))
    return run


def test_model_card_command_writes_the_card_of_an_existing_run(fabricated_run, tmp_path, capsys):
    assert not (fabricated_run / "model_card.json").exists()
    assert main(["model-card", "--run", str(fabricated_run)]) == 0
    card = json.loads((fabricated_run / "model_card.json").read_text())
    assert set(card) == FIELDS
    ext = card["external_results"]["chexpert"]
    assert ext["source"]["label_file"] == "valid.csv" and ext["summary"]["auroc_macro"] is not None
    assert card["data"]["data_root"] == f"{tmp_path}/nih"
    assert card["training"]["weights"] == f"{tmp_path}/weights.h5"
    # with perf export's figures: in the card's speed section and in the report's speed table
    export = fabricated_run / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes(b"onnx")
    (export / "exports.json").write_text(json.dumps({"onnx": {"file": str(export / "model.onnx"), "bytes": 4,
                                                              "max_abs_diff": 2e-5, "checked_images": 33}}))
    (export / "perf.json").write_text(json.dumps({"engines": {"keras": {"ms_batch1": 3.82, "ms_batch32": 0.63},
                                                              "onnx": {"ms_batch1": 0.67, "ms_batch32": 0.91}}}))
    assert main(["model-card", "--run", str(fabricated_run)]) == 0
    card = json.loads((fabricated_run / "model_card.json").read_text())
    assert card["speed"]["exports"]["onnx"] == {"file": "model.onnx", "bytes": 4, "max_abs_diff": 2e-5,
                                                "checked_images": 33, "versions": None,
                                                "latency_ms": {"ms_batch1": 0.67, "ms_batch32": 0.91}}
    from reports.build import build_report

    build_report(fabricated_run.parent.parent, bootstrap=20)
    speed = (fabricated_run.parent.parent / "report" / "index.html").read_text().split('id="speed"')[1]
    assert "keras 3.82 · onnx 0.67" in speed
    capsys.readouterr()
    assert main(["model-card", "--run", str(fabricated_run), "--public"]) == 0
    public = json.loads(capsys.readouterr().out)
    _assert_no_path(public, tmp_path)
    assert public["training"]["weights"] == "<a weights file>"
    assert public["external_results"] == card["external_results"]


def test_model_card_refuses_what_is_not_a_finished_run(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    assert main(["model-card", "--run", str(tmp_path / "notes")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "notes") in err

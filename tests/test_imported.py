"""Outside models beside ours: another model's prediction file imported into a sweep is scored, compared and
reported like a trained run, and a file that does not fit the sweep's test set is one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from tests.helpers import one_line_error, run_cli


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    """A finished sweep of two runs written as training writes them (perf report's fabricated NIH-like sweep)."""
    from benchmark.perf.report import fabricate

    out = tmp_path_factory.mktemp("fabricated")
    fabricate(out, runs=2, images=300, labels=3, n_boot=50)
    return out


def _copy(src, dest):
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.keras", "checkpoint", ".lock", "report*"))
    return dest


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr()


def _comparisons(sweep, a, b):
    summary = json.loads((sweep / "report" / "summary.json").read_text())
    return [c for c in summary["comparisons"] if {c["a"], c["b"]} == {a, b}], summary


def test_reimported_predictions_give_identical_metrics_and_a_zero_difference(fabricated, tmp_path, capsys):
    from reports.build import build_report

    sweep = _copy(fabricated, tmp_path / "sweep")
    source = sweep / "runs" / "run00-densenet121"
    test = pd.read_csv(source / "predictions_test.csv")
    # only what an outside model has: paths and probabilities, one label under CheXpert's name for NIH's Effusion
    minimal = test[["path"] + [c for c in test if c.startswith("y_prob_")]].sample(frac=1, random_state=0)
    minimal = minimal.rename(columns={"y_prob_Effusion": "y_prob_Pleural Effusion"})
    minimal.to_csv(tmp_path / "outside.csv", index=False)
    code, out = _cli(capsys, "import-predictions", "--sweep", sweep, "--name", "outside", tmp_path / "outside.csv",
                     "--val", source / "predictions_val.csv")
    assert code == 0, out.err
    run = sweep / "runs" / "outside"
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    assert (run / ".cxr-bench").read_text().split()[0] == "imported"
    mine, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run, source))
    assert mine["test"] == theirs["test"] and mine["val"] == theirs["val"]
    assert json.loads((run / "thresholds.json").read_text()) == json.loads((source / "thresholds.json").read_text())
    kept = pd.read_csv(run / "predictions_test.csv")  # the sweep's own columns, in the sweep's order
    pd.testing.assert_frame_equal(kept, test)

    build_report(sweep, bootstrap=50)
    pairs, summary = _comparisons(sweep, "outside", "run00-densenet121")
    assert {c["label"] for c in pairs} == {"macro", "Atelectasis", "Cardiomegaly", "Effusion"}
    assert all(c["diff"] == 0 and c["ci"] == [0, 0] for c in pairs)
    assert "imported (outside)" in {r["backbone"] for r in summary["runs"]}
    assert "Imported predictions (outside.csv)" in (sweep / "report" / "outside.html").read_text()


def test_without_validation_predictions_the_thresholded_metrics_are_missing(fabricated, tmp_path, capsys):
    from reports.build import build_report

    sweep = _copy(fabricated, tmp_path / "sweep")
    source = sweep / "runs" / "run01-resnet34"
    code, out = _cli(capsys, "import-predictions", "--sweep", sweep, "--name", "noval",
                     source / "predictions_test.csv")
    assert code == 0, out.err
    run = sweep / "runs" / "noval"
    assert not (run / "thresholds.json").exists()
    mine, theirs = (json.loads((d / "metrics.json").read_text())["test"] for d in (run, source))
    assert mine["summary"]["auroc_macro"] == theirs["summary"]["auroc_macro"]
    assert mine["summary"]["auroc_macro_ci"] == theirs["summary"]["auroc_macro_ci"]
    assert mine["summary"]["f1_macro"] is None and mine["summary"]["hamming_loss"] is None
    assert all("by_threshold" not in m for m in mine["per_label"].values())
    build_report(sweep, bootstrap=50, public=True)
    page = (sweep / "report-public" / "noval.html").read_text()
    assert "thresholded metrics are missing" in page and str(tmp_path) not in page


@pytest.mark.parametrize("change, fragments", [
    ("missing", ["has no row for the test set's image test/00000000_000.png", "every test image"]),
    ("extra", ["path elsewhere/x.png", "not in the sweep's test set"]),
    ("unknown", ["column y_prob_Pneumonitis", "not one of the sweep's labels"]),
    ("dropped", ["no y_prob_ column for the sweep's label 'Cardiomegaly'"]),
    ("high", ["column y_prob_Cardiomegaly, row 7", "1.3 is not a probability in [0, 1]"]),
    ("nan", ["column y_prob_Atelectasis, row 3", "nan is not a probability"]),
    ("duplicate", ["path test/00000004_000.png has more than one row"]),
])
def test_a_file_that_does_not_fit_the_test_set_is_one_line(fabricated, tmp_path, capsys, change, fragments):
    test = pd.read_csv(fabricated / "runs" / "run00-densenet121" / "predictions_test.csv")
    bad = {"missing": lambda t: t.iloc[1:],
           "extra": lambda t: pd.concat([t, t.iloc[:1].assign(path="elsewhere/x.png")]),
           "unknown": lambda t: t.assign(y_prob_Pneumonitis=0.5),
           "dropped": lambda t: t.drop(columns=["y_prob_Cardiomegaly"]),
           "high": lambda t: t.assign(y_prob_Cardiomegaly=np.where(t.index == 5, 1.3, t["y_prob_Cardiomegaly"])),
           "nan": lambda t: t.assign(y_prob_Atelectasis=np.where(t.index == 1, np.nan, t["y_prob_Atelectasis"])),
           "duplicate": lambda t: pd.concat([t, t.iloc[4:5]])}[change](test)
    bad.to_csv(tmp_path / "bad.csv", index=False)
    before = sorted(p.name for p in (fabricated / "runs").iterdir())
    code, out = _cli(capsys, "import-predictions", "--sweep", fabricated, "--name", "bad", tmp_path / "bad.csv")
    assert code == 2 and len(out.err.strip().splitlines()) == 1, out.err
    assert str(tmp_path / "bad.csv") in out.err and all(f in out.err for f in fragments), out.err
    assert sorted(p.name for p in (fabricated / "runs").iterdir()) == before  # nothing written


def test_an_import_never_replaces_a_trained_run(fabricated, tmp_path):
    source = fabricated / "runs" / "run01-resnet34"
    before = (source / "metrics.json").read_bytes()
    result = run_cli("import-predictions", "--sweep", fabricated, "--name", "run01-resnet34",
                     fabricated / "runs" / "run00-densenet121" / "predictions_test.csv")
    one_line_error(result, "run01-resnet34", "choose another --name")
    assert (source / "metrics.json").read_bytes() == before


def test_a_trained_runs_predictions_reimported_compare_with_difference_zero(sweep, tmp_path, capsys):
    """The same on the session's trained sweep (CheXpert's layout on the phantom, scored per study)."""
    out, _ = sweep
    copy = _copy(out, tmp_path / "copy")
    source = copy / "runs" / "mobilenet-32px"
    code, err = _cli(capsys, "import-predictions", "--sweep", copy, "--name", "again",
                     source / "predictions_test.csv", "--val", source / "predictions_val.csv")
    assert code == 0, err.err
    mine, theirs = (json.loads((d / "metrics.json").read_text()) for d in (copy / "runs" / "again", source))
    assert mine["test"] == theirs["test"] and mine["test"]["summary"]["unit"] == "study"
    result = run_cli("report", "--sweep", copy)
    assert result.returncode == 0, result.stderr
    pairs, summary = _comparisons(copy, "again", "mobilenet-32px")
    rows = {r["run"]: r for r in summary["runs"]}
    assert rows["again"]["test_auroc_macro"] == rows["mobilenet-32px"]["test_auroc_macro"] is not None
    # the phantom's 33 test studies may support no comparison (too few positives: the fabricated sweep above
    # checks the comparison itself); where one is made, its difference is 0
    assert all(c["diff"] == 0 and c["ci"] == [0, 0] for c in pairs)

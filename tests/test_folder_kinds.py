"""Folder kinds: a folder's marker says what cxr-bench made it for (run, sweep, report, phantom, cache) and its
layout version; every writing command takes only the kind it expects and refuses anything else, a user's folder or
one made for another purpose, with one line naming the folder and what it is, and leaves it as it was."""

import json

import pytest

from benchmark.errors import UserError
from benchmark.runs.ownership import LAYOUT, MARKER, claim, kind_of, read_marker
from tests.helpers import one_line_error, run_cli, tree_state


def _sweep(folder, runs=("mobilenet-s0",)):
    """A sweep folder as `sweep` leaves it: marked, its fingerprint.json and run folders (no sweep.yaml: the
    report then takes every run folder under runs/)."""
    claim(folder, "sweep", "a sweep folder", "")
    (folder / "fingerprint.json").write_text('{"config": {"epochs": 1}, "data": {}}\n')
    for name in runs:
        run = claim(folder / "runs" / name, "run", "a run directory", "")
        (run / "config.yaml").write_text("backbone: mobilenet\n")
        (run / "status.json").write_text('{"status": "done"}')
    return folder


def test_the_marker_records_kind_and_layout(tmp_path):
    run = claim(tmp_path / "run", "run", "a run directory", "hint")
    assert read_marker(run) == ("run", LAYOUT)
    assert f"layout {LAYOUT}" in (run / MARKER).read_text().splitlines()
    assert kind_of(run) == "run" and kind_of(tmp_path) is None


def test_train_out_a_sweep_folder_is_refused_and_the_sweep_left_as_it_was(tmp_path):
    sweep = _sweep(tmp_path / "sweep")
    before = tree_state(sweep)
    err = one_line_error(run_cli("train", "--out", sweep), str(sweep), "a sweep folder made by cxr-bench",
                         "not a run directory")
    assert "choose another --out" in err
    assert tree_state(sweep) == before
    assert json.loads((sweep / "fingerprint.json").read_text()) == {"config": {"epochs": 1}, "data": {}}


def test_train_out_a_folder_with_only_a_status_json_is_refused(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "status.json").write_text('{"status": "done", "note": "my own pipeline"}')
    (folder / "history.csv").write_text("epoch,loss\n0,1.0\n")
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "weights.bin").write_bytes(b"mine")
    before = tree_state(folder)
    one_line_error(run_cli("train", "--out", folder), str(folder), "did not make", "status.json")
    assert tree_state(folder) == before
    assert not (folder / MARKER).exists()


def test_sweep_out_a_run_folder_is_refused(tmp_path):
    run = claim(tmp_path / "run", "run", "a run directory", "")
    (run / "config.yaml").write_text("backbone: mobilenet\n")
    before = tree_state(run)
    with pytest.raises(UserError, match="is a run directory made by cxr-bench, not a sweep folder"):
        claim(run, "sweep", "a sweep folder", "choose another --out")
    assert tree_state(run) == before


def test_report_never_overwrites_a_users_report_folder(tmp_path):
    sweep = _sweep(tmp_path / "sweep")
    (sweep / "report").mkdir()
    (sweep / "report" / "index.html").write_text("<h1>my own write-up</h1>")
    (sweep / "report" / "summary.csv").write_text("model,auc\nmine,0.9\n")
    before = tree_state(sweep)
    one_line_error(run_cli("report", "--sweep", sweep), str(sweep / "report"), "did not make", "index.html")
    assert tree_state(sweep) == before
    assert (sweep / "report" / "index.html").read_text() == "<h1>my own write-up</h1>"


def test_older_folders_are_recognised_by_the_one_compatibility_rule(tmp_path):
    """Before markers: a run held status.json (with its status) and config.yaml; a sweep sweep.yaml and runs/; a
    report index.html and summary.json with its runs, inside one of those. Such a folder is taken (and marked)."""
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "status.json").write_text('{"status": "failed", "error": "x"}')
    (run / "config.yaml").write_text("backbone: mobilenet\n")
    assert kind_of(run) == "run"
    claim(run, "run", "a run directory", "")
    assert read_marker(run) == ("run", LAYOUT)
    sweep = tmp_path / "old-sweep"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("backbone: mobilenet\n")
    (sweep / "report").mkdir()
    (sweep / "report" / "index.html").write_text("<html></html>")
    (sweep / "report" / "summary.json").write_text('{"runs": []}')
    assert kind_of(sweep) == "sweep" and kind_of(sweep / "report") == "report"
    # one of the files alone is not enough
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("a: 1\n")
    (tmp_path / "half" / "status.json").write_text('{"status": "mine"}')
    assert kind_of(tmp_path / "half") is None


def test_a_folder_of_a_newer_layout_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text(f"run\nlayout {LAYOUT + 1}\n")
    with pytest.raises(UserError, match="newer cxr-bench"):
        claim(run, "run", "a run directory", "")
    assert sorted(p.name for p in run.iterdir()) == [MARKER]


def test_evaluate_and_retrain_take_only_their_kind_and_create_nothing(tmp_path):
    missing = tmp_path / "missing"
    one_line_error(run_cli("evaluate", "--run", missing), str(missing), "does not exist")
    assert not missing.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    one_line_error(run_cli("evaluate", "--run", mine), str(mine), "a folder cxr-bench did not make")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # no lock file put into it
    sweep = _sweep(tmp_path / "sweep")
    run = sweep / "runs" / "mobilenet-s0"
    before = tree_state(sweep)
    one_line_error(run_cli("retrain", "--sweep", run, "mobilenet-s0"), str(run), "a run directory made by "
                   "cxr-bench, not a sweep folder")
    one_line_error(run_cli("evaluate", "--run", sweep), str(sweep), "a sweep folder made by cxr-bench")
    assert tree_state(sweep) == before


def test_perf_report_keep_writes_only_into_a_missing_or_empty_folder(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    sweep = _sweep(tmp_path / "sweep")
    before = tree_state(sweep)
    for folder in (mine, sweep):
        one_line_error(run_cli("perf", "report", "--runs", 2, "--images", 40, "--labels", 2, "--bootstrap", 5,
                               "--keep", folder), f"--keep {folder} is not empty")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert tree_state(sweep) == before

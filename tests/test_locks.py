"""Every writer locks, with the holder named: `report` (the sweep's or run's lock), `evaluate`, the phantom writer;
lock files are opened without following links and never created in a folder the command does not own."""

import os

import pytest

from benchmark.errors import UserError
from benchmark.runs.ownership import FolderLock, claim, holder_text
from tests.helpers import one_line_error, run_cli, tree_state


@pytest.fixture
def sweep(tmp_path):
    """A sweep folder of ours with two finished runs (fabricated, no training)."""
    from benchmark.perf.report import fabricate

    out = claim(tmp_path / "sweep", "sweep", "a sweep folder", "")
    fabricate(out, runs=2, images=60, labels=2, n_boot=10)
    return out


def test_report_is_refused_while_a_sweep_holds_the_folder(sweep):
    before = tree_state(sweep)
    with FolderLock(sweep, "sweep"):
        result = run_cli("report", "--sweep", sweep, "--bootstrap", 10)
    one_line_error(result, str(sweep), "in use by another", holder_text())
    assert tree_state(sweep) == before
    assert not (sweep / "report").exists()
    result = run_cli("report", "--sweep", sweep, "--bootstrap", 10)  # once the sweep has ended
    assert result.returncode == 0, result.stderr[-2000:]
    assert (sweep / "report" / "index.html").is_file()


def test_a_lock_file_that_is_a_link_is_not_followed(sweep, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("the user's file")
    run = sorted((sweep / "runs").iterdir())[0]
    (run / ".lock").symlink_to(target)
    with pytest.raises(UserError, match="is a link, not cxr-bench's lock file"):
        FolderLock(run, "run").acquire()
    one_line_error(run_cli("report", "--sweep", run, "--bootstrap", 10), str(run / ".lock"), "is a link")
    assert target.read_text() == "the user's file"
    assert os.path.islink(run / ".lock") and not (run / "report").exists()


def test_a_second_make_phantom_into_the_same_folder_is_refused(tmp_path):
    from benchmark.phantom.writer import LOCK

    out = tmp_path / "phantom"
    out.mkdir()
    with FolderLock(out, "make-phantom", LOCK):
        result = run_cli("data", "make-phantom", "--out", out, "--n", 20, "--size", 32)
    one_line_error(result, str(out), "in use by another make-phantom", holder_text())
    assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing written beside the lock
    result = run_cli("data", "make-phantom", "--out", out, "--n", 20, "--size", 32)  # then it is made
    assert result.returncode == 0, result.stderr[-2000:]
    from benchmark.runs.ownership import kind_of

    assert kind_of(out / "CheXpert-v1.0-small") == "phantom"
    result = run_cli("data", "make-phantom", "--out", out, "--n", 20, "--size", 32, "--seed", 1)  # over its own
    assert result.returncode == 0, result.stderr[-2000:]


def test_evaluate_and_retrain_are_refused_while_the_folder_is_in_use(tmp_path):
    from benchmark.config import dump_yaml
    from benchmark.runs.plan import plan_runs
    from tests.helpers import tiny_config

    cfg = tiny_config(tmp_path / "phantom")
    sweep = claim(tmp_path / "sweep", "sweep", "a sweep folder", "")
    (sweep / "sweep.yaml").write_text(dump_yaml(cfg))
    name, run_cfg = plan_runs(cfg)[0]
    run = claim(sweep / "runs" / name, "run", "a run directory", "")
    (run / "config.yaml").write_text(dump_yaml(run_cfg))
    before = tree_state(sweep)
    with FolderLock(run, "training"):
        one_line_error(run_cli("evaluate", "--run", run), str(run), "in use by another", holder_text())
    with FolderLock(sweep, "sweep"):
        one_line_error(run_cli("retrain", "--sweep", sweep, name), str(sweep), "in use by another", holder_text())
    assert tree_state(sweep) == before

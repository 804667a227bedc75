"""Nothing lost: the tool writes only into folders it made (or missing / empty ones), deletes nothing it did not
make, and lets one writer at a time into a folder, naming the holder to the second."""

import hashlib
import os
import subprocess
import sys
import time

import pytest

from benchmark.errors import UserError
from benchmark.runs.ownership import FolderLock, claim, is_ours, lock_is_held, remove_ours
from tests.helpers import ROOT, one_line_error, run_cli, tree_state


@pytest.fixture
def download(tmp_path):
    """A stand-in for a researcher's real CheXpert download (no phantom marker)."""
    root = tmp_path / "data"
    image = root / "CheXpert-v1.0-small" / "train" / "patient00001" / "study1" / "view1_frontal.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\xff\xd8\xff a real radiograph")
    (root / "CheXpert-v1.0-small" / "train.csv").write_text("Path,Sex,Age\n")
    return root


def _hashes(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_make_phantom_refuses_a_download_and_leaves_it_untouched(download):
    before = _hashes(download)
    result = run_cli("data", "make-phantom", "--out", download, "--n", 30, "--size", 32)
    one_line_error(result, str(download), "not a cxr-bench phantom", "looks like a real CheXpert download")
    assert _hashes(download) == before


def test_the_default_profile_pointed_at_a_download_refuses_and_leaves_it_untouched(download, tmp_path):
    """What `./run_all.sh --data-root /data` runs: the quick profile, whose data set is the phantom."""
    before = _hashes(download)
    result = run_cli("sweep", "--config", ROOT / "configs" / "quick.yaml", "--out", tmp_path / "runs",
                     "--data-root", download)
    one_line_error(result, "not a cxr-bench phantom", "--config configs/chexpert.yaml")
    assert _hashes(download) == before
    result = run_cli("sweep", "--config", ROOT / "configs" / "quick.yaml", "--out", tmp_path / "runs2",
                     "--data-root", download / "CheXpert-v1.0-small")  # the download's own folder
    one_line_error(result, "not a cxr-bench phantom")
    assert _hashes(download) == before


def test_the_phantom_is_remade_only_over_its_own_files(tmp_path):
    from benchmark.phantom import FOLDER, make_phantom

    make_phantom(tmp_path, n=24, size=32, seed=1)
    assert (tmp_path / FOLDER / "SYNTHETIC_PHANTOM.txt").is_file()
    make_phantom(tmp_path, n=30, size=32, seed=2)  # over its own phantom: allowed
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        make_phantom(tmp_path, n=24, size=32)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    partial = tmp_path / "other" / (FOLDER + ".partial")
    partial.mkdir(parents=True)
    (partial / "keep.txt").write_text("not the phantom's")
    with pytest.raises(UserError, match="CheXpert-v1.0-small.partial"):
        make_phantom(tmp_path / "other", n=24, size=32)  # a partial folder without the phantom's marker
    assert (partial / "keep.txt").is_file()


def test_claim_accepts_missing_empty_or_own_folders_only(tmp_path):
    assert is_ours(claim(tmp_path / "new", "run", "a run directory", "hint"))
    (tmp_path / "empty").mkdir()
    claim(tmp_path / "empty", "run", "a run directory", "hint")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match=r"theirs holds files that cxr-bench did not make \(thesis.tex\)"):
        claim(tmp_path / "theirs", "run", "a run directory", "choose another --out")
    with pytest.raises(UserError, match="was not made by cxr-bench"):
        remove_ours(tmp_path / "theirs")
    assert (tmp_path / "theirs" / "thesis.tex").is_file()
    remove_ours(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_train_refuses_an_out_folder_that_is_not_a_run(phantom, tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "history.csv").write_text("my own numbers\n")
    result = run_cli("train", "--config", ROOT / "configs" / "ci.yaml", "--backbone", "mobilenet", "--out",
                     tmp_path / "project", "--data-root", phantom)
    one_line_error(result, "project holds files that cxr-bench did not make (history.csv)")
    assert (tmp_path / "project" / "history.csv").read_text() == "my own numbers\n"


def test_a_lock_names_its_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from benchmark.runs.ownership import FolderLock\n"
        f"FolderLock(__import__('pathlib').Path({str(tmp_path)!r}), 'sweep').acquire()\n"
        "print('held', flush=True); time.sleep(60)")], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"in use by another sweep \(process {holder.pid} on host "):
            FolderLock(tmp_path, "sweep").acquire()
        assert lock_is_held(tmp_path / ".lock")
    finally:
        holder.kill()  # kill -9: no clean-up of its own
        holder.wait()
    with FolderLock(tmp_path, "sweep"):  # the operating system released it
        assert lock_is_held(tmp_path / ".lock")
    assert not lock_is_held(tmp_path / ".lock")


def test_a_child_ends_when_its_parent_is_gone_without_prctl(tmp_path):
    """The watch a sweep's runs start (benchmark.runs.processes.watch_parent), tested on its own."""
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child = subprocess.Popen([sys.executable, "-c", (
        "import time; from benchmark.runs.processes import watch_parent\nwatch_parent()\ntime.sleep(60)")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "CXR_BENCH_PARENT_PID": str(parent.pid)})
    try:
        time.sleep(1.0)
        assert child.poll() is None
        parent.kill()
        parent.wait()
        child.wait(timeout=10)  # gone within the watch's poll
    finally:
        parent.kill()
        child.kill()


def test_nothing_is_left_untouched_by_a_refused_report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text('{"status": "failed"}')
    (run / "config.yaml").write_text("backbone: mobilenet\n")
    (run / "report").mkdir()
    (run / "report" / "draft.docx").write_text("a user's own report")
    before = tree_state(run)
    one_line_error(run_cli("report", "--sweep", run), "draft.docx")
    assert tree_state(run) == before

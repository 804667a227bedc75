"""Every refusal is one line: the operating system's (a full disk, a file where a folder should be) through the
command line's one handler, naming the path, and every option and value checked before use. Each test asserts exit
code 2, one line on stderr, and what was left behind."""

import shutil

import pytest

from tests.helpers import CI_PROFILE, fault_env, one_line_error, run_cli, tree_state


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    """Two finished runs with predictions, written by `perf report`'s fabricator (no training)."""
    from benchmark.perf.report import fabricate

    out = tmp_path_factory.mktemp("fabricated")
    fabricate(out, runs=2, images=120, labels=3, n_boot=20)
    return out


def _copy(fabricated, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(fabricated, out)
    return out


def test_a_full_disk_while_report_writes_is_one_line_naming_the_file(fabricated, tmp_path):
    sweep = _copy(fabricated, tmp_path)
    runs_before = tree_state(sweep / "runs")
    result = run_cli("report", "--sweep", sweep, "--bootstrap", 20, env=fault_env(disk_full="summary.csv"))
    one_line_error(result, str(sweep / "report" / "summary.csv"), "No space left on device", "free space")
    assert tree_state(sweep / "runs") == runs_before
    assert not (sweep / "report" / "summary.csv").exists()
    assert not [p for p in (sweep / "report").iterdir() if p.name.endswith(".tmp")]  # its temporary file removed


def test_a_full_disk_at_the_start_of_a_sweep_is_one_line(phantom, tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("sweep", "--config", CI_PROFILE, "--data-root", phantom, "--out", out,
                     env=fault_env(disk_full="sweep.yaml"))
    one_line_error(result, str(out / "sweep.yaml"), "No space left on device")
    assert not (out / "sweep.yaml").exists() and not (out / "runs").exists()


def test_a_file_where_a_folder_should_be_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("mine")
    out = tmp_path / "afile" / "run"
    one_line_error(run_cli("train", "--out", out), str(tmp_path / "afile"), "Not a directory",
                   "a part of the path is a file")
    assert (tmp_path / "afile").read_text() == "mine"


def test_options_and_values_are_checked_before_anything_is_touched(phantom, tmp_path):
    out = tmp_path / "sweep"
    one_line_error(run_cli("sweep", "--config", CI_PROFILE, "--data-root", phantom, "--out", out, "--gpus", "0,0"),
                   "--gpus '0,0'", "GPU 0 more than once")
    one_line_error(run_cli("sweep", "--config", CI_PROFILE, "--data-root", phantom, "--out", out, "--gpus", "0,,1"),
                   "is not a GPU id")
    (tmp_path / "afile").write_text("mine")
    one_line_error(run_cli("sweep", "--config", CI_PROFILE, "--data-root", phantom, "--out", out,
                           "--set", f"cache_dir={tmp_path / 'afile'}"), "cache_dir", str(tmp_path / "afile"),
                   "is a file, not a folder")
    one_line_error(run_cli("train", "--config", CI_PROFILE, "--data-root", phantom, "--out", out,
                           "--set", "val_fraction=.nan"), "val_fraction")
    assert not out.exists()
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_nul_byte_in_a_label_files_path_is_one_line(phantom, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(phantom, root, ignore=shutil.ignore_patterns("train", "valid"))  # the label files suffice
    lines = (root / "train.csv").read_text().split("\n")
    lines[3] = lines[3].replace(".jpg", "\0.jpg", 1)
    (root / "train.csv").write_text("\n".join(lines))
    out = tmp_path / "sweep"
    result = run_cli("sweep", "--config", CI_PROFILE, "--data-root", root, "--out", out)
    one_line_error(result, str(root / "train.csv"), "line 4", "NUL byte")
    assert not (out / "runs").exists()


@pytest.mark.parametrize("damaged, content", [
    ("predictions_test.csv", b'path,y_true_a\n"a row cut short\n'),
    ("predictions_val.csv", b"\xea\xff\x00 not text at all"),
    ("history.csv", b'epoch,loss\n0,1.0,2,3\n"x\n'),
])
def test_a_damaged_csv_of_a_run_is_one_line_from_report(fabricated, tmp_path, damaged, content):
    sweep = _copy(fabricated, tmp_path)
    run = sorted((sweep / "runs").iterdir())[0]
    (run / damaged).write_bytes(content)
    before = tree_state(sweep / "runs")
    one_line_error(run_cli("report", "--sweep", sweep, "--bootstrap", 20), str(run / damaged), "is damaged")
    assert tree_state(sweep / "runs") == before
    assert not (sweep / "report" / "index.html").exists()

"""The command line as a user meets it: fast start, one-line errors with exit code 2, the data commands."""

import json
import subprocess
import sys

import pandas as pd

from tests.helpers import CI_PROFILE, ROOT, one_line_error, run_cli


def test_help_lists_commands_without_tensorflow():
    code = ("import sys, runpy; sys.argv=['benchmark','--help']\n"
            "try:\n runpy.run_module('benchmark', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print('TF_LOADED' if 'tensorflow' in sys.modules else 'NO_TF')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    for command in ("data", "models", "train", "evaluate", "predict", "report", "sweep", "perf"):
        assert command in out.stdout
    assert out.stdout.strip().endswith("NO_TF")


def test_data_inspect_and_report_do_not_import_tensorflow(phantom):
    code = ("import sys\nfrom benchmark.cli import main\n"
            f"main(['data','inspect','--dataset','phantom','--csv',{str(phantom / 'train.csv')!r},'--json'])\n"
            "import reports.build\n"
            "print('TF_LOADED' if 'tensorflow' in sys.modules else 'NO_TF')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("NO_TF"), out.stderr


def test_make_phantom_and_inspect_it(tmp_path):
    result = run_cli("data", "make-phantom", "--out", tmp_path, "--n", 60, "--size", 48, "--seed", 1)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "CheXpert-v1.0-small"
    result = run_cli("data", "inspect", "--dataset", "chexpert", "--csv", root / "train.csv", "--json", "--all-views")
    out = json.loads(result.stdout)
    frame = pd.read_csv(root / "train.csv")
    assert out["images"] == len(frame) and out["synthetic"] is True
    assert out["views"]["frontal"] + out["views"]["lateral"] == len(frame)
    assert set(out["labels"]) >= {"Edema", "Pleural Effusion", "No Finding"}
    text = run_cli("data", "inspect", "--dataset", "chexpert", "--csv", root / "train.csv")
    assert "SYNTHETIC" in text.stdout


def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, phantom):
    one_line_error(run_cli("data", "inspect", "--dataset", "nih", "--csv", tmp_path / "nope.csv"), "nope.csv", "does not exist")
    csv = tmp_path / "train.csv"
    frame = pd.read_csv(phantom / "train.csv").head(5)
    frame.loc[2, "Edema"] = 7
    frame.to_csv(csv, index=False)
    one_line_error(run_cli("data", "inspect", "--dataset", "chexpert", "--csv", csv), "column 'Edema', line 4", "7.0")
    frame.loc[2, "Edema"] = 1
    frame.loc[1, "Path"] = "../../secret.jpg"
    frame.to_csv(csv, index=False)
    one_line_error(run_cli("data", "inspect", "--dataset", "chexpert", "--csv", csv), "line 3", "escapes the data root")
    one_line_error(run_cli("data", "inspect", "--dataset", "chexpert", "--csv", phantom / "train.csv",
                           "--data-root", tmp_path / "missing"), "does not exist")
    frame.drop(columns=["Edema"]).to_csv(csv, index=False)
    one_line_error(run_cli("data", "inspect", "--dataset", "chexpert", "--csv", csv), "missing label column", "Edema")
    one_line_error(run_cli("report", "--sweep", tmp_path / "none"), "is not a folder")
    one_line_error(run_cli("sweep", "--config", CI_PROFILE, "--out", tmp_path / "s",
                           "--set", "epoch=3"), "unknown config key 'epoch'")


def test_missing_image_names_the_file(phantom, tmp_path):
    import shutil

    root = tmp_path / "CheXpert-v1.0-small"
    shutil.copytree(phantom, root)
    victim = pd.read_csv(root / "train.csv")["Path"].iloc[0]
    (tmp_path / victim).unlink()
    result = run_cli("train", "--config", CI_PROFILE, "--backbone", "mobilenet", "--out",
                     tmp_path / "run", "--data-root", root)
    one_line_error(result, victim.split("/", 1)[1], "does not exist", "--skip-bad-images")
    result = run_cli("train", "--config", CI_PROFILE, "--backbone", "mobilenet", "--out",
                     tmp_path / "run0", "--dataset", "chexpert", "--data-root", tmp_path / "nowhere")
    one_line_error(result, "nowhere", "no train.csv")  # the decoders started for it stop quietly
    (tmp_path / victim).write_bytes(b"\xff\xd8\xff not a JPEG")  # found by a decoder, while TensorFlow loads
    result = run_cli("train", "--config", CI_PROFILE, "--backbone", "mobilenet", "--out",
                     tmp_path / "run1", "--data-root", root)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]  # TensorFlow may have logged before it, if decoding was slow
    assert last == (f"error: image {tmp_path / victim} is not a readable PNG or JPEG (corrupt or truncated?); "
                    "fix or remove it, or pass --skip-bad-images"), last
    result = run_cli("train", "--config", CI_PROFILE, "--backbone", "mobilenet", "--out",
                     tmp_path / "run2", "--data-root", root, "--skip-bad-images", "--set", "epochs=1",
                     "--set", "steps_per_epoch=1", "--set", "gradcam_images=0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipping 1 bad image(s)" in result.stderr


def test_one_module_per_command_each_in_the_contract():
    """Every module of benchmark/cli/ but the package and common.py registers a command, and setup.cfg's
    independence contract lists each, so that a new command's module cannot quietly lean on another's."""
    import configparser

    from benchmark import cli

    files = {p.stem for p in (ROOT / "benchmark" / "cli").glob("*.py")} - {"__init__", "common"}
    assert {m.__name__.rsplit(".", 1)[1] for m in cli.COMMANDS} == files
    contract = configparser.ConfigParser()
    contract.read(ROOT / "setup.cfg")
    listed = contract["importlinter:contract:commands"]["modules"].split()
    assert sorted(listed) == sorted(f"benchmark.cli.{name}" for name in files)
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert all(parser.get_default("func") or parser._subparsers for parser in commands.values())

"""The templates of docs/templates/ (docs/extending.md), loaded from their files and run for real, so that a
researcher's starting point cannot fall out of step with the code: the data set format loads a label file into the
table contract with one-line errors, the launcher runs runs through the sweep's Scheduler (and, in the slow test,
a real sweep), and the backbone keeps the backbone contract. Each registration goes into a copy of its table, so
other tests never see it."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pandas as pd
import pytest

from benchmark.errors import UserError
from tests.helpers import ROOT

TEMPLATES = ROOT / "docs" / "templates"


def load_template(monkeypatch, name: str):
    """Import docs/templates/NAME.py as a module of its own (its registration runs now); it is in sys.modules for
    the test only, because the tables name loaders and launchers as "module:attribute" and import them by name."""
    module_name = f"cxr_bench_template_{name}"
    spec = importlib.util.spec_from_file_location(module_name, TEMPLATES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def data_format(monkeypatch):
    from benchmark.data import formats

    monkeypatch.setattr(formats, "FORMATS", dict(formats.FORMATS))  # the template's register() fills a copy
    return load_template(monkeypatch, "data_format")


@pytest.fixture
def backbone(monkeypatch):
    from models import registry

    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    return load_template(monkeypatch, "backbone")


@pytest.fixture
def launcher(monkeypatch):
    from benchmark.sweep import launchers

    module = load_template(monkeypatch, "launcher")
    # the one line docs/extending.md asks for in LAUNCHERS, as "module:Class"
    monkeypatch.setitem(launchers.LAUNCHERS, "template", f"{module.__name__}:SubprocessLauncher")
    return module


# --- the data set format --------------------------------------------------------------------------------------

HEADER = ["Image", "Patient", "Accession", "ViewPosition", "Partition", "Sex", "Age", "Atelectasis", "Cardiomegaly",
          "Consolidation", "Edema", "Pleural Effusion"]
ROWS = [["images/p1/a1/1.png", "p1", "a1", "PA", "train", "F", 61, 1, "", 0, -1, ""],
        ["images/p1/a1/2.png", "p1", "a1", "LATERAL", "train", "F", 61, 1, "", 0, -1, ""],
        ["images/p2/a2/1.png", "p2", "a2", "AP", "", "Male", "", 0, 1, "", 0, 1],
        ["images/p3/a3/1.png", "p3", "a3", "AP", "Validation", "M", 45, "", 0, 0, 1, 0],
        ["images/p4/a4/1.png", "p4", "a4", "PA", "test", "", 80, 0, 0, 1, "", 0]]


def write_labels(folder, rows, header=HEADER):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=header).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def test_data_format_template_loads_the_table_contract(data_format, tmp_path):
    from benchmark.config import Config, validate
    from benchmark.data.formats import default_csv, get_format, names
    from benchmark.data.load import assign_splits, load_table
    from benchmark.data.table import META_COLUMNS

    name = data_format.NAME
    assert name in names() and get_format(name).has_studies
    validate(Config(dataset=name))  # the `dataset` key accepts it
    write_labels(tmp_path, ROWS)
    csv = default_csv(name, tmp_path)  # found under the data root by its label_files
    assert csv == tmp_path / "labels.csv"
    ds = load_table(name, csv, tmp_path, views="all")
    assert ds.labels == data_format.LABELS
    assert list(ds.frame.columns) == [*META_COLUMNS, *data_format.LABELS]
    frame = ds.frame.set_index("path")
    assert frame.loc["images/p1/a1/1.png", "file"] == str(tmp_path.resolve() / "images/p1/a1/1.png")
    assert frame["view"].tolist() == ["frontal", "lateral", "frontal", "frontal", "frontal"]
    assert frame["projection"].tolist() == ["PA", "", "AP", "AP", "PA"]
    assert frame["split"].tolist() == ["train", "train", "train", "val", "test"]
    assert frame["study"].tolist() == ["a1", "a1", "a2", "a3", "a4"]
    assert frame["sex"].tolist()[:4] == ["F", "F", "M", "M"] and pd.isna(frame["sex"].iloc[4])
    assert frame["age"].iloc[0] == 61 and np.isnan(frame["age"].iloc[2])
    edema = frame["Edema"].to_numpy()
    assert edema[:4].tolist() == [-1.0, -1.0, 0.0, 1.0] and np.isnan(edema[4]) and edema.dtype == np.float32
    assert np.isnan(frame.loc["images/p1/a1/1.png", "Cardiomegaly"])
    assert len(load_table(name, csv, tmp_path).frame) == 4  # the default `views: frontal` drops the lateral
    split = assign_splits(load_table(name, csv, tmp_path), 0.2, 0.2, seed=0)
    assert split.protocol["name"] == "user_split" and "'Partition'" in split.protocol["test"]
    assert split.split("test")["patient"].tolist() == ["p4"]  # the file's own test set, as given


@pytest.mark.parametrize("column, value, message", [
    ("Edema", 2, r"labels\.csv: column 'Edema', line 3: value 2\.0 is not a label"),
    ("Edema", "yes", r"column 'Edema', line 3: value 'yes' is not a label"),
    ("Partition", "holdout", r"column 'Partition', line 3: value 'holdout' is not train, val or test"),
    ("Image", "../../etc/passwd", r"line 3: path '\.\./\.\./etc/passwd' escapes the data root"),
])
def test_data_format_template_bad_values_are_one_line(data_format, tmp_path, column, value, message):
    from benchmark.data.load import load_table

    rows = [list(r) for r in ROWS]
    rows[1][HEADER.index(column)] = value
    csv = write_labels(tmp_path, rows)
    with pytest.raises(UserError, match=message) as err:
        load_table(data_format.NAME, csv, tmp_path)
    assert "\n" not in str(err.value)


def test_data_format_template_missing_column_is_one_line(data_format, tmp_path):
    from benchmark.data.load import load_table

    csv = write_labels(tmp_path, [r[:4] + r[5:] for r in ROWS], [c for c in HEADER if c != "Partition"])
    with pytest.raises(UserError, match=r"labels\.csv: missing column\(s\) 'Partition'; found: Image"):
        load_table(data_format.NAME, csv, tmp_path)


# --- the launcher ---------------------------------------------------------------------------------------------

# Stands in for `python -m benchmark train` (the run contract's child), so that the Scheduler drives the launcher's
# real processes without training: it writes what a run writes (its log through stdout, progress.json, status.json).
FAKE_CHILD = """
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from benchmark.runs.rundir import PROGRESS, write_status

run = Path(sys.argv[1])
print("wrapped=" + os.environ.get("WRAPPED_BY", "no"), "cache_built=" + os.environ.get("CXR_BENCH_CACHE_BUILT", "0"),
      "parent=" + os.environ.get("CXR_BENCH_PARENT_PID", ""), flush=True)
if run.name == "hangs":
    time.sleep(120)  # ended by the launcher's stop() when run_timeout passes
(run / PROGRESS).write_text(json.dumps({{"epoch": 1, "epochs": 1, "loss": 0.5, "val_auroc": 0.7}}))
print("test mean AUROC 0.750", flush=True)
write_status(run, "done", test_auroc=0.75)
"""


def test_launcher_template_keeps_the_launcher_contract(launcher, monkeypatch):
    from benchmark.config import Config
    from benchmark.sweep.contract import Launcher
    from benchmark.sweep.launchers import launcher_class

    cls = launcher_class("template")  # through the "module:Class" string, as a sweep finds it
    assert cls is launcher.SubprocessLauncher and issubclass(cls, Launcher)
    assert {"start", "poll", "stop", "close", "check", "from_config"} <= set(vars(cls))  # all of the contract
    cfg = Config()
    cls.check(cfg, None)
    with pytest.raises(UserError, match="--gpus 0,1 does not apply to this launcher") as err:
        cls.check(cfg, "0,1")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(launcher, "PREFIX", ("no-such-srun-here",))
    with pytest.raises(UserError, match="no-such-srun-here is not on PATH"):
        cls.check(cfg, None)
    made = cls.from_config(cfg)
    assert made.capacity == launcher.CAPACITY and made.prefix == ("no-such-srun-here",)


def test_launcher_template_runs_processes_through_the_scheduler(launcher, monkeypatch, tmp_path, capsys):
    """Two runs at once behind a wrapper command (`env`, standing in for srun): one finishes and is recorded done
    from its status.json; the other hangs and is stopped by the launcher when run_timeout passes."""
    from benchmark.config import Config
    from benchmark.runs.ownership import claim
    from benchmark.runs.rundir import RUNS, TRAIN_LOG, read_status
    from benchmark.sweep.scheduler import Scheduler

    child = tmp_path / "fake_child.py"
    child.write_text(FAKE_CHILD.format(root=str(ROOT)))
    monkeypatch.setattr(launcher, "child_command", lambda run_dir: [sys.executable, str(child), str(run_dir)])
    out = claim(tmp_path / "sweep", "sweep", "a sweep folder", "")
    chosen = launcher.SubprocessLauncher(capacity=2, prefix=("env", "WRAPPED_BY=template"))
    chosen.check(Config(), None)  # `env` is on PATH
    scheduler = Scheduler(out, [("ok", Config()), ("hangs", Config())], chosen, run_timeout=3)
    scheduler.run()
    chosen.close()
    printed = capsys.readouterr().out
    ok, hangs = out / RUNS / "ok", out / RUNS / "hangs"
    assert read_status(ok)["status"] == "done" and read_status(ok)["test_auroc"] == 0.75
    assert f"wrapped=template cache_built=1 parent={os.getpid()}" in (ok / TRAIN_LOG).read_text()
    assert "[1/2] ok: training through env (log:" in printed and "[2/2] hangs: training through env" in printed
    assert "[1 ok] epoch 1/1  loss 0.5000  val_auroc 0.7000" in printed
    assert "[1/2] ok: done in" in printed and "test mean AUROC 0.750" in printed
    status = read_status(hangs)
    assert status["status"] == "failed" and "stopped after run_timeout=3 s" in status["error"]
    assert status["exit_code"] != 0  # SIGTERM from the launcher's stop()
    assert chosen.describe() == "launcher: 2 run(s) at a time through env WRAPPED_BY=template"


# --- the backbone ---------------------------------------------------------------------------------------------

def test_backbone_template_keeps_the_backbone_contract(backbone):
    pytest.importorskip("keras")
    from benchmark.config import Config, validate
    from benchmark.train.network import classifier_for
    from models.registry import build_backbone, describe_all
    from tests.backbone_contract import check, run_backbone_contract

    name = backbone.NAME
    validate(Config(backbone=name, weights=None))  # the `backbone` key accepts it
    with pytest.raises(UserError, match=f"{name} has no ImageNet weights"):  # nor imagenet_file nor timm
        validate(Config(backbone=name, weights="imagenet"))
    assert name in [row["name"] for row in describe_all()]  # `python -m benchmark models` lists it
    check(run_backbone_contract(name))  # the same contract every registered backbone keeps (tests/test_models.py)
    model = classifier_for(Config(backbone=name, weights=None, image_size=32, augment=False), 3)
    assert [layer.name for layer in model.layers][-2:] == ["backbone", "head"]
    zeroed = [w for w in model.get_layer("backbone").weights if "_block_2_bn" in w.path and w.path.endswith("gamma")]
    assert zeroed and all(not np.asarray(w).any() for w in zeroed)  # residual_bn names the blocks' last BatchNorm
    with pytest.raises(UserError, match=f"image_size 16 is too small for {name}; use at least 32 px"):
        build_backbone(name, 16, None)


# --- all three together ---------------------------------------------------------------------------------------

def phantom_as_template_format(phantom, folder):
    """The phantom's label files rewritten in the template format's layout (its images stay where they are)."""
    from benchmark.data.labels import COMPETITION_5

    rows = []
    for file, part in (("train.csv", "train"), ("valid.csv", "val")):
        if not (phantom / file).is_file():
            continue
        src = pd.read_csv(phantom / file)
        ids = src["Path"].str.extract(r"(patient\d+)/(study\d+)")
        rows.append(pd.DataFrame({
            "Image": src["Path"].str.replace(r"^CheXpert-v1\.0-small/", "", regex=True),
            "Patient": ids[0], "Accession": ids[0] + "-" + ids[1],
            "ViewPosition": np.where(src["Frontal/Lateral"] == "Lateral", "LATERAL", src["AP/PA"].fillna("PA")),
            "Partition": part, "Sex": src["Sex"], "Age": src["Age"], **{lab: src[lab] for lab in COMPETITION_5}}))
    folder.mkdir(parents=True, exist_ok=True)
    pd.concat(rows).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


@pytest.mark.slow
def test_templates_train_a_run_in_process(data_format, backbone, phantom, tmp_path):
    """The template backbone trained on the phantom read through the template format, in this process (a sweep's
    child processes would need the registrations in our tables: see docs/extending.md)."""
    pytest.importorskip("tensorflow")
    from benchmark.train.training import train_run
    from tests.helpers import tiny_config

    csv = phantom_as_template_format(phantom, tmp_path / "labels")
    cfg = tiny_config(phantom, dataset=data_format.NAME, train_csv=str(csv), backbone=backbone.NAME, epochs=1,
                      steps_per_epoch=3, gradcam_images=0, augment=False)
    train_run(cfg, tmp_path / "run", log=lambda *a: None)
    from benchmark.runs.rundir import read_status

    status = read_status(tmp_path / "run")
    assert status["status"] == "done", status
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    assert "auroc" in metrics


@pytest.mark.slow
def test_launcher_template_runs_a_real_sweep(launcher, phantom, tmp_path):
    """The launcher as it is (no wrapper) runs the run contract's real child, `python -m benchmark train`, through
    the whole sweep: plan, image cache, training in the child, report."""
    pytest.importorskip("tensorflow")
    from benchmark.config import load_config
    from benchmark.runs.rundir import RUNS, read_status
    from benchmark.sweep.run import run_sweep
    from tests.helpers import CI_PROFILE

    cfg = load_config(CI_PROFILE, dict(data_root=str(phantom), backbones=["mobilenet"], epochs=1, steps_per_epoch=2,
                                       gradcam_images=0))
    launcher.SubprocessLauncher.check(cfg, None)
    assert run_sweep(cfg, tmp_path / "sweep", launcher=launcher.SubprocessLauncher.from_config(cfg)) == 0
    assert read_status(tmp_path / "sweep" / RUNS / "mobilenet")["status"] == "done"
    assert (tmp_path / "sweep" / "report" / "index.html").is_file()

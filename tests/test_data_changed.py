"""Fingerprints where results are combined: after an edit to the label file, `retrain` and `evaluate` refuse
(one line, nothing touched) instead of putting runs of two versions of the data into one report."""

import pytest

from benchmark.config import dump_yaml
from benchmark.input.prepare import data_fingerprint
from benchmark.phantom import FOLDER, make_phantom
from benchmark.runs.fingerprint import config_part
from benchmark.runs.ownership import claim
from benchmark.runs.plan import plan_runs
from benchmark.runs.rundir import write_json
from tests.helpers import one_line_error, run_cli, tiny_config, tree_state


@pytest.fixture
def data(tmp_path):
    make_phantom(tmp_path / "data", n=40, size=32, seed=5)
    return tmp_path / "data" / FOLDER


def _edit_a_label(root):
    csv = root / "train.csv"
    lines = csv.read_text().split("\n")
    row = next(i for i, line in enumerate(lines) if ",1.0" in line)
    lines[row] = lines[row].replace(",1.0", ",0.0", 1)
    csv.write_text("\n".join(lines))


def test_retrain_refuses_when_the_data_changed_since_the_sweep(data, tmp_path):
    cfg = tiny_config(data)
    out = claim(tmp_path / "sweep", "sweep", "a sweep folder", "")
    (out / "sweep.yaml").write_text(dump_yaml(cfg))
    runs = plan_runs(cfg)
    write_json(out / "fingerprint.json", {"config": config_part(cfg, sweep=True),
                                          "data": data_fingerprint(cfg, sorted({r.image_size for _, r in runs}))})
    name = runs[0][0]
    run = claim(out / "runs" / name, "run", "a run directory", "")
    (run / "config.yaml").write_text(dump_yaml(runs[0][1]))
    (run / "status.json").write_text('{"status": "done"}')
    _edit_a_label(data)
    before = tree_state(out)
    one_line_error(run_cli("retrain", "--sweep", out, name), str(out), "the data changed",
                   "the label file", "nothing was retrained")
    assert tree_state(out) == before and sorted(p.name for p in (out / "runs").iterdir()) == [name]


def test_evaluate_refuses_to_rewrite_a_run_from_changed_labels(data, tmp_path):
    cfg = tiny_config(data)
    run = claim(tmp_path / "run", "run", "a run directory", "")
    (run / "config.yaml").write_text(dump_yaml(cfg))
    write_json(run / "fingerprint.json", {"config": config_part(cfg), "data": data_fingerprint(cfg)})
    (run / "model.keras").write_bytes(b"a trained model")  # not opened: the data are checked first
    (run / "metrics.json").write_text('{"test": {"summary": {"auroc_macro": 0.8}}}')
    _edit_a_label(data)
    before = tree_state(run)
    one_line_error(run_cli("evaluate", "--run", run), str(run), "other label files", "nothing was rewritten")
    assert tree_state(run) == before


def test_report_marks_a_run_trained_on_other_data_than_the_sweep(tmp_path):
    import json

    from benchmark.perf.report import fabricate

    sweep = claim(tmp_path / "sweep", "sweep", "a sweep folder", "")
    fabricate(sweep, runs=2, images=60, labels=2, n_boot=10)
    data = {"label_files": {str(tmp_path / "data" / "train.csv"): "aaaa"}, "images": {"224": "key1"},
            "splits": "s1"}
    write_json(sweep / "fingerprint.json", {"config": {}, "data": data})
    first, second = sorted(p for p in (sweep / "runs").iterdir())
    write_json(first / "fingerprint.json", {"config": {}, "data": data})
    write_json(second / "fingerprint.json", {"config": {}, "data": {**data, "label_files": {"x.csv": "bbbb"}}})
    result = run_cli("report", "--sweep", sweep, "--bootstrap", 10)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((sweep / "report" / "summary.json").read_text())
    assert summary["data_differs"] == {second.name: "the label files"}
    page = (sweep / "report" / "index.html").read_text()
    assert f"{second.name} was trained on other\n data than the sweep records" in page
    assert f"{first.name} was trained on other" not in page

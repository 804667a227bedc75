"""BENCHMARKS.md's marked tables are what their measurement files give: a figure and its source cannot disagree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from benchmark.errors import UserError
from benchmark.perf import tables
from tests.helpers import NO_TENSORFLOW, ROOT


def test_every_marked_table_equals_its_measurement_and_every_measurement_is_shown():
    text = (ROOT / tables.DOC).read_text()
    shown = tables.sources(text)
    assert shown, "BENCHMARKS.md marks no rendered table"
    assert tables.tables(check=True) == []  # `python -m benchmark.perf.tables` renders them again
    stored = sorted(str(p.relative_to(ROOT)) for p in (ROOT / tables.MEASUREMENTS).glob("*.json"))
    assert sorted(shown) == stored  # no measurement lies unused, none is shown twice
    for src in shown:
        record = tables.load(ROOT / src)
        assert record["measured"] and record["machine"] and record["commands"]


def test_the_default_run_row_is_the_summary_by_hand():
    summary = json.loads((ROOT / tables.MEASUREMENTS / "default-run.json").read_text())["summary"]
    run = next(r for r in summary["runs"] if r["run"] != summary["reference"])
    lines = tables.render({"kind": "default-run", "summary": summary}).splitlines()
    row = next(x for x in lines if x.startswith(f"| {tables._name(run['backbone'])} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    m, s = divmod(round(run["train_seconds"]), 60)
    assert cells[1] == (f"{m} min {s:02d} s" if m else f"{s} s")
    assert cells[2] == "%.3f (%.3f–%.3f)" % (run["test_auroc_macro"], run["test_auroc_macro_ci_low"],
                                           run["test_auroc_macro_ci_high"])
    assert cells[3] == "%+.3f, p %.3f" % (run["vs_reference_diff"], run["vs_reference_p_holm"])
    assert cells[4] == "%.1f M" % (run["params"] / 1e6)


def _copy(tmp_path):
    shutil.copy(ROOT / tables.DOC, tmp_path / tables.DOC)
    shutil.copytree(ROOT / tables.MEASUREMENTS, tmp_path / tables.MEASUREMENTS)
    return tmp_path


def test_a_changed_measurement_makes_its_table_stale_until_rendered_again(tmp_path):
    root = _copy(tmp_path)
    outside = tables.BLOCK.sub("", (root / tables.DOC).read_text())
    src = root / tables.MEASUREMENTS / "default-run.json"
    record = json.loads(src.read_text())
    record["summary"]["runs"][0]["test_auroc_macro"] = 0.5
    src.write_text(json.dumps(record))
    stale = tables.tables(check=True, root=root)
    assert stale == [f"{tables.MEASUREMENTS}/default-run.json"]
    assert "| 0.500 (" not in (root / tables.DOC).read_text()  # --check changes nothing
    assert tables.tables(check=False, root=root) == stale
    assert "| 0.500 (" in (root / tables.DOC).read_text() and tables.tables(check=True, root=root) == []
    assert tables.BLOCK.sub("", (root / tables.DOC).read_text()) == outside  # nothing outside the tables moved


def test_a_perf_line_is_recorded_with_when_where_and_how_and_never_replaced(tmp_path):
    line = {"benchmark": "train", "backbone": "mobilenet", "engine": "tensorflow", "pipeline": 100.0,
            "in_memory": 125.0, "pipeline_vs_in_memory": 0.8}
    out = tmp_path / "train.jsonl"
    out.write_text(json.dumps(line) + "\n")
    cmd = "python -m benchmark perf train --backbone mobilenet --json"
    path = tables.record("feed", "training-feed", [cmd], [str(out)], None, root=tmp_path)
    rec = tables.load(path)
    assert rec["commands"] == [cmd] and rec["results"] == [line] and "cores" in rec["machine"] and rec["measured"]
    assert "| MobileNet | tensorflow | 100.0 | 125.0 | 80 % |" in tables.render(rec)
    with pytest.raises(UserError, match="exists"):
        tables.record("feed", "training-feed", [cmd], [str(out)], None, root=tmp_path)
    with pytest.raises(UserError, match="a plain file name"):  # never written outside docs/measurements
        tables.record("../../elsewhere", "training-feed", [cmd], [str(out)], None, root=tmp_path)
    report_line = tmp_path / "report.json"
    report_line.write_text(json.dumps({"benchmark": "report", "runs": 3}))
    with pytest.raises(UserError, match="not what --kind training-feed tables show"):
        tables.record("wrong", "training-feed", [cmd], [str(report_line)], None, root=tmp_path)
    assert sorted(p.name for p in (tmp_path / tables.MEASUREMENTS).iterdir()) == ["feed.json"]
    with pytest.raises(UserError, match="has no table"):
        tables.record("other", "nonsense", [cmd], [str(out)], None, root=tmp_path)


def test_the_check_runs_without_tensorflow(tmp_path):
    log = tmp_path / "tf.log"
    env = {**os.environ, "PYTHONPATH": f"{NO_TENSORFLOW}{os.pathsep}{ROOT}", "CXR_TEST_TENSORFLOW_LOG": str(log)}
    result = subprocess.run([sys.executable, "-m", "benchmark", "perf", "tables", "--check"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not log.exists()

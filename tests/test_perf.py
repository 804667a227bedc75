"""`perf`: every rate of the pipeline benchmark, and the report benchmark on a small fabricated sweep."""

import json

from tests.helpers import run_cli


def test_perf_pipeline_reports_every_rate_as_json(phantom):
    result = run_cli("perf", "pipeline", "--dataset", "phantom", "--data-root", phantom, "--image-size", 32,
                     "--repeats", 2, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)  # stdout is the JSON object alone
    from benchmark.data.formats import default_csv
    from benchmark.data.load import load_table

    assert out["images"] == len(load_table("phantom", default_csv("phantom", phantom), phantom).frame)
    assert out["image_size"] == 32 and len(out["runs"]["first_pass"]) == 2
    for key in ("first_pass", "cache_build", "cached", "image_data_generator", "decode_limit"):
        assert out[key] > 0, key
    assert out["first_pass"] < out["cache_build"]  # the first pass includes the build
    assert out["first_pass_vs_image_data_generator"] == out["first_pass"] / out["image_data_generator"]


def test_perf_report_times_the_report_of_a_fabricated_sweep(tmp_path):
    result = run_cli("perf", "report", "--runs", 3, "--images", 400, "--labels", 5, "--bootstrap", 100, "--json",
                     "--keep", tmp_path / "sweep")
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["runs"] == 3 and out["pairs"] == 3 and out["seconds"] > 0 and out["peak_mb"] > 50
    assert out["comparisons"] == 3 * (1 + 5)  # every pair: the macro AUROC and each label
    summary = json.loads((tmp_path / "sweep" / "report" / "summary.json").read_text())
    assert len(summary["runs"]) == 3 and len(summary["comparisons"]) == out["comparisons"]


def test_doctor_prints_the_machine_and_a_throughput_table():
    import pytest

    pytest.importorskip("tensorflow")
    result = run_cli("doctor", "--backbones", "mobilenet", "--image-size", 32, "--steps", 2, "--json")  # ~1 min
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["machine"]["tensorflow"].startswith("2.") and out["machine"]["cores"] >= 1
    row = out["rows"][0]
    assert row["backbone"] == "mobilenet"
    for key in ("float32", "mixed", "mixed+xla", "pipeline", "in_memory"):  # XLA: the first backbone has it
        assert row[key] > 0, (key, row)
    assert out["mixed"] == ("mixed_float16" if out["machine"]["gpus"] else "mixed_bfloat16")

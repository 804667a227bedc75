"""Sweeps on Ray: the same runs, statuses and summary as the local runner on a private local cluster; a node lost
mid-run on a two-node cluster (loopback only), after which that run resumes and no finished run is redone; Ray
missing or misused is one line. Every Ray process binds to 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), and
every command here has a hard time limit: a driver that cannot reach its cluster hangs and ignores SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import CI_PROFILE, ROOT, one_line_error, run_cli, wait_for_epochs

pytest.importorskip("ray", reason="Ray is the optional extra .[ray]")
pytestmark = pytest.mark.slow

LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _summary(out):
    return pd.read_csv(out / "report" / "summary.csv").set_index("run").sort_index()


def test_a_sweep_on_a_local_ray_cluster_gives_the_local_runners_runs_statuses_and_summary(phantom, tmp_path):
    # one run that trains and one that fails (16 px is too small for MobileNet); deterministic, so that the
    # numbers too must be the same (without it, parallel batch reading may reorder an epoch's batches)
    grid = ("--config", CI_PROFILE, "--data-root", phantom, "--set", "backbones=[mobilenet]",
            "--set", "image_sizes=[32, 16]", "--set", "steps_per_epoch=4", "--deterministic")
    local = run_cli("sweep", *grid, "--out", tmp_path / "local", timeout=420)
    assert local.returncode == 1, local.stdout[-3000:] + local.stderr[-3000:]
    result = run_cli("sweep", *grid, "--out", tmp_path / "ray", "--backend", "ray", "--ray-address", "local",
                     env=LOOPBACK, timeout=420)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Ray cluster (local): 1 node(s), 2 CPUs" in result.stdout
    assert "running on node" in result.stdout and "FAILED" in result.stdout and "report:" in result.stdout
    ours, theirs = _summary(tmp_path / "ray"), _summary(tmp_path / "local")
    assert ours.index.tolist() == theirs.index.tolist() == ["mobilenet-16px", "mobilenet-32px"]
    assert ours["status"].tolist() == theirs["status"].tolist() == ["failed", "done"]
    assert ours["error"].fillna("").tolist() == theirs["error"].fillna("").tolist()
    numbers = [c for c in theirs.columns if c.startswith(("val_", "test_")) and theirs[c].dtype.kind == "f"]
    assert "test_auroc_macro" in numbers
    pd.testing.assert_frame_equal(ours[numbers], theirs[numbers])


def test_a_node_lost_mid_run_the_run_resumes_elsewhere_and_no_finished_run_is_redone(phantom, tmp_path):
    cluster = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ray_cluster.py")], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env={**__import__("os").environ, **LOOPBACK})
    sweep = None
    try:
        info = json.loads(_readline(cluster, 120))
        assert info["address"].startswith("127.0.0.1:")
        out = tmp_path / "sweep"
        args = ["sweep", "--config", CI_PROFILE, "--out", out, "--data-root", phantom, "--set", "epochs=3",
                "--set", "steps_per_epoch=4", "--set", "gradcam_images=0", "--set", "early_stopping_patience=10",
                "--launcher", "ray", "--ray-address", info["address"]]
        sweep = subprocess.Popen([sys.executable, "-m", "benchmark", *map(str, args)], cwd=ROOT,
                                 env={**__import__("os").environ, **LOOPBACK}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        lost = _run_on_node(out, info["worker"][:8], sweep, timeout=180)  # one CPU a node: one run each
        kept = ({"mobilenet", "resnet34"} - {lost}).pop()
        wait_for_epochs(sweep, out / "runs" / lost / "checkpoint" / "state.json", 1, timeout=180)
        cluster.stdin.write("remove\n")
        cluster.stdin.flush()
        assert _readline(cluster, 60) == "removed"
        stdout, _ = sweep.communicate(timeout=420)
        assert sweep.returncode == 0, stdout[-4000:]
        log = (out / "runs" / lost / "train.log").read_text()
        nodes = [line for line in log.splitlines() if line.startswith("running on node")]
        assert len(nodes) == 2 and nodes[1].endswith(info["head"][:8]), nodes  # run again, on the node left
        assert "resuming" in log
        history = pd.read_csv(out / "runs" / lost / "history.csv")
        assert history["epoch"].tolist() == [0, 1, 2]  # no epoch twice, none missing
        other = (out / "runs" / kept / "train.log").read_text()
        assert other.count("running on node") == 1 and "resuming" not in other
        models = {name: (out / "runs" / name / "model.keras").stat().st_mtime_ns for name in ("mobilenet", "resnet34")}
        again = run_cli(*args, env=LOOPBACK, timeout=300)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert again.stdout.count("finished earlier, skipped") == 2
        assert models == {name: (out / "runs" / name / "model.keras").stat().st_mtime_ns for name in models}
    finally:
        if sweep is not None and sweep.poll() is None:
            sweep.kill()
        try:
            cluster.communicate("exit\n", timeout=60)
        except subprocess.TimeoutExpired:
            cluster.kill()  # Ray's reaper ends the cluster's processes


def _readline(proc, timeout: float) -> str:
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no answer from the Ray test cluster in {timeout} s"
    return proc.stdout.readline().strip()


def _run_on_node(out, node: str, proc, timeout: float) -> str:
    """The name of the run whose task started on `node` (from the line each task writes into its log)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for name in ("mobilenet", "resnet34"):
            log = out / "runs" / name / "train.log"
            if log.is_file() and "running on node" in log.read_text() and log.read_text().split(
                    "running on node", 1)[1].split("\n", 1)[0].strip().endswith(node):
                return name
        time.sleep(0.2)
    raise AssertionError(f"no run started on node {node} in {timeout} s")


def test_ray_missing_or_misused_is_one_line_with_the_way_out(phantom, tmp_path):
    fake = tmp_path / "no-ray"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    args = ("sweep", "--config", CI_PROFILE, "--out", tmp_path / "a", "--data-root", phantom, "--backend", "ray")
    missing = run_cli(*args, env={"PYTHONPATH": f"{fake}:{ROOT}"}, timeout=120)
    one_line_error(missing, "needs Ray", "pip install -e .[ray]")
    gpus = run_cli(*args, "--gpus", "0,1", timeout=120)
    one_line_error(gpus, "--gpus is for the local launcher", "ray_gpus_per_run")

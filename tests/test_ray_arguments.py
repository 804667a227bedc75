"""What the Ray launcher hands to Ray, checked without starting a cluster (a recording stand-in for the `ray`
module): paths resolved on the driver, `local` a private loopback cluster whatever $RAY_ADDRESS says, secrets in
the task's runtime environment and never among its arguments."""

import os
from pathlib import Path

import pytest

from benchmark.sweep import ray_launcher
from benchmark.sweep.contract import Job


class _RecordingRay:
    """The part of `ray` the launcher calls, recording what it is given."""

    def __init__(self):
        self.inits, self.options, self.calls = [], None, []

    def init(self, **kwargs):
        self.inits.append((kwargs, os.environ.get("RAY_ADDRESS")))

    def cluster_resources(self):
        return {"CPU": 2.0}

    def remote(self, fn):  # ray.remote(fn) -> a task; task.options(...) -> a task; task.remote(*args) -> a handle
        ray = self

        class Task:
            def options(self, **kwargs):
                ray.options = kwargs
                return self

            def remote(self, *args):
                ray.calls.append(args)
                return "handle"

        return Task()


@pytest.fixture
def recorded(monkeypatch):
    fake = _RecordingRay()
    monkeypatch.setattr(ray_launcher, "import_ray", lambda address=None: fake)
    return fake


def test_local_means_a_private_loopback_cluster_whatever_ray_address_says(recorded, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://someone-elses-cluster:10001")
    ray_launcher.RayLauncher("local", 0, 1.0, local_cpus=1)
    kwargs, seen_address = recorded.inits[0]
    # "local" is Ray's word for a new instance: never the cluster ray_current_cluster names
    assert kwargs["address"] == "local" and kwargs["_node_ip_address"] == "127.0.0.1"
    assert seen_address is None  # ray.init did not see $RAY_ADDRESS ...
    assert os.environ["RAY_ADDRESS"] == "ray://someone-elses-cluster:10001"  # ... which is put back after


def test_secrets_travel_in_the_runtime_environment_not_the_task_arguments(recorded, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("HF_HOME", "/models/hf")
    monkeypatch.setenv("CXR_BENCH_CACHE", "/shared/cache")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "runs" / "r").mkdir(parents=True)
    launcher = ray_launcher.RayLauncher("local", 0, 1.0, local_cpus=1)
    launcher.start(Job(1, "r", Path("out/runs/r")))  # a relative --out, as run_all.sh's default
    run_dir, gpus, env, cwd = recorded.calls[0]
    assert run_dir == str(tmp_path / "out" / "runs" / "r")  # resolved on the driver
    assert "hf_secret_value" not in repr(recorded.calls)
    assert env["HF_HOME"] == "/models/hf" and env["CXR_BENCH_CACHE"] == "/shared/cache"
    assert recorded.options["runtime_env"] == {"env_vars": {"HF_TOKEN": "hf_secret_value"}}


def test_task_environment_splits_secrets_from_settings():
    plain, secret = ray_launcher.task_environment({
        "HF_TOKEN": "t", "HF_HUB_OFFLINE": "1", "KERAS_BACKEND": "jax", "CXR_BENCH_API_KEY": "k", "HOME": "/root",
        "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert plain == {"HF_HUB_OFFLINE": "1", "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    assert secret == {"HF_TOKEN": "t", "CXR_BENCH_API_KEY": "k"}

"""Shared fixtures: a private image cache, one tiny phantom made once per session, and one small sweep (two
backbones, two of its four runs failing) that the sweep, report and evaluation tests all read. Helpers are in
tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import CI_PROFILE, run_cli


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("image-cache")
    os.environ["CXR_BENCH_CACHE"] = str(path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return path


@pytest.fixture(scope="session")
def phantom(tmp_path_factory) -> Path:
    """A small phantom (300 images at 64 px); returns the CheXpert-v1.0-small folder."""
    from benchmark.phantom import FOLDER, make_phantom

    out = tmp_path_factory.mktemp("phantom")
    make_phantom(out, n=300, size=64, seed=3)
    return out / FOLDER


@pytest.fixture(scope="session")
def sweep(phantom, tmp_path_factory):
    """Two backbones, and a broken run for each (an image size too small for the network); two at a time, as
    on two GPUs (without GPUs the slots only set CUDA_VISIBLE_DEVICES)."""
    out = tmp_path_factory.mktemp("sweep")
    result = run_cli("sweep", "--config", CI_PROFILE, "--out", out, "--data-root", phantom,
                     "--set", "image_sizes=[32, 16]", "--set", "name=<b>escaped</b>", "--gpus", "0,1")
    return out, result


# Tests run in two worker processes (setup.cfg). A worker computes a session or module fixture for itself, so the
# tests that read the trained `sweep` above go to one worker (it trains once), each file's tests stay together (its
# module fixtures are made once), and the tests that start Ray share a worker (one loopback cluster at a time).
RAY_TESTS = {"test_ray.py", "test_tune.py::test_tuned_sweep_killed_resumed_reported_and_refused_when_changed"}


def _group(item) -> str:
    file = Path(str(item.fspath)).name
    if file in RAY_TESTS or f"{file}::{item.originalname}" in RAY_TESTS:
        return "ray"
    if "sweep" in item.fixturenames and item._fixtureinfo.name2fixturedefs["sweep"][-1].scope == "session":
        return "trained-sweep"
    return file


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))

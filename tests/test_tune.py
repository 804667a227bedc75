"""Tuning (benchmark/sweep/tune.py, reports/tuning.py): the keys and their refusals, the expected best of n trials
against enumeration, the pruner on fabricated history.csv files against the hand median, the seeded asks, the
report's tuning block read from fabricated trial folders without Optuna, and (slow) the issue's scenario: a sweep
of two backbones tuned with an equal budget, killed with kill -9 after a finished trial, resumed without redoing
it (on a loopback Ray cluster, two trials at once, when Ray is installed), reported, and refused when re-run with
another space."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmark.config import load_config
from benchmark.errors import UserError
from benchmark.runs.rundir import HISTORY, REQUESTED, RUNS, SWEEP_CONFIG, write_config, write_status
from tests.helpers import CI_PROFILE, one_line_error, run_cli, tree_state

optuna = pytest.importorskip("optuna")

LR_SPACE = {"learning_rate": {"log_uniform": [1.0e-4, 1.0e-2]}}


def tuned(**changes):
    return load_config(CI_PROFILE, {"tune_trials": 3, "tune_space": LR_SPACE, **changes})


def test_tuning_keys_are_checked():
    from benchmark.runs.plan import check_tuning

    cfg = tuned()
    assert cfg.tune_space == LR_SPACE and cfg.tune_sampler == "tpe" and cfg.tune_seeds == 1
    refused = [({"name": {"choice": ["a", "b"]}}, "name does not change a run's results"),
               ({"backbone": {"choice": ["mobilenet"]}}, "backbone is not tuned"),
               ({"dropout": {"uniform": [0.0, 1.5]}}, "1.5 is out of range"),
               ({"batch_size": {"uniform": [8, 32]}}, "use int or choice"),
               ({"learning_rate": {"log_uniform": [0, 0.1]}}, "lo > 0"),
               ({"learning_rte": {"int": [1, 2]}}, "unknown key 'learning_rte'"),
               ({"dropout": [0.1, 0.2]}, "dropout: one of log_uniform, uniform, int, choice")]
    for space, fragment in refused:
        with pytest.raises(UserError, match="tune_space must be") as err:
            tuned(tune_space=space)
        assert fragment in str(err.value)
    for changes, fragment in [({"tune_trials": None}, "needs a budget"), ({"seeds": [0, 1]}, "no seeds axis"),
                              ({"tune_space": {"finetune": {"choice": ["full", "linear"]}},
                                "finetunes": ["full", "linear"]}, "both tuned")]:
        with pytest.raises(UserError, match=fragment):
            check_tuning(tuned(**changes))
    with pytest.raises(UserError, match="need tune_space"):
        check_tuning(load_config(CI_PROFILE, {"tune_trials": 3}))


def test_plan_of_a_tuned_sweep_is_each_configuration_chosen_setting_per_seed():
    from benchmark.runs.plan import plan_runs

    plan = plan_runs(tuned(tune_seeds=2, seed=4))
    assert [name for name, _ in plan] == ["mobilenet-best-s5", "mobilenet-best-s6", "resnet34-best-s5",
                                          "resnet34-best-s6"]
    assert all(c.tune_space is None and c.tune_trials is None for _, c in plan)  # a run trains one setting


def test_expected_max_against_enumeration():
    from benchmark.runs.plan import expected_max

    values = [0.7, 0.6, 0.9, 0.75]
    for n in (1, 2, 3):
        draws = [max(combo) for combo in itertools.product(values, repeat=n)]
        assert expected_max(values, n) == pytest.approx(sum(draws) / len(draws), abs=1e-12)
    assert expected_max([0.6, 0.7, 0.9], 2) == pytest.approx(0.8)  # by hand: .6/9 + .7*3/9 + .9*5/9
    assert expected_max(values, 50) == pytest.approx(0.9, abs=1e-6)


def _fabricate_trial(study, space, run_dir: Path, history: list[float], status: str | None, base):
    """Ask a trial, and give it the folder a run of it leaves: requested.yaml, history.csv, status.json."""
    trial = study.ask(space)
    run_dir.mkdir(parents=True)
    write_config(run_dir, base.replace(**trial.params), REQUESTED)
    (run_dir / HISTORY).write_text("epoch,loss,val_auroc,learning_rate,epoch_seconds\n" + "".join(
        f"{e},0.5,{v},0.001,1.0\n" for e, v in enumerate(history)))
    if status:
        write_status(run_dir, status, val_auroc=max(history))
    return trial.number


def test_median_pruner_on_fabricated_histories(tmp_path):
    """Three finished trials reach 0.70, 0.80 and 0.90 at epoch 1 (median 0.80, by hand): a running trial whose best
    is 0.79 there is pruned, one at 0.81 is not, and nothing is pruned at epoch 0 (the warm-up)."""
    from benchmark.runs.plan import untuned
    from benchmark.sweep.tune import distributions, open_study, report_epochs, settle

    cfg = tuned(tune_pruner="median", epochs=3)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'tuning.db'}")
    space = distributions(optuna, cfg.tune_space)
    study = open_study(optuna, storage, cfg, "c")
    base = untuned(cfg)
    for k, top in enumerate([0.70, 0.80, 0.90]):
        run_dir = tmp_path / f"trial-{k:03d}"
        n = _fabricate_trial(study, space, run_dir, [top - 0.1, top], None, base)
        assert report_epochs(optuna, study, n, run_dir) is False  # fewer than 3 finished trials: never pruned
        write_status(run_dir, "done", val_auroc=top)
        assert settle(optuna, study, n, run_dir, 5.0) == "done"
    low = _fabricate_trial(study, space, tmp_path / "trial-003", [0.10], None, base)
    assert report_epochs(optuna, study, low, tmp_path / "trial-003") is False  # epoch 0: warm-up
    with open(tmp_path / "trial-003" / HISTORY, "a") as fh:
        fh.write("1,0.5,0.79,0.001,1.0\n")
    assert report_epochs(optuna, study, low, tmp_path / "trial-003") is True
    high = _fabricate_trial(study, space, tmp_path / "trial-004", [0.5, 0.81], None, base)
    assert report_epochs(optuna, study, high, tmp_path / "trial-004") is False
    write_status(tmp_path / "trial-003", "pruned", epochs=2)
    assert settle(optuna, study, low, tmp_path / "trial-003", 2.0) == "pruned"
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "PRUNED", 4: "RUNNING"}
    assert [study.get_trials()[i].value for i in range(3)] == [0.70, 0.80, 0.90]
    assert study.get_trials()[3].intermediate_values == {0: 0.10, 1: 0.79}


def test_asks_are_seeded_per_trial(tmp_path):
    """A study reopened after an interruption asks what an uninterrupted one asks (per-trial seeds), and two
    configurations do not share their draws."""
    from benchmark.sweep.tune import distributions, open_study

    cfg = tuned(tune_sampler="random")
    space = distributions(optuna, cfg.tune_space)

    def asked(db: str, name: str) -> list[float]:
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / db}")
        return [open_study(optuna, storage, cfg, name, n).ask(space).params["learning_rate"] for n in range(3)]

    first = asked("a.db", "mobilenet")
    assert asked("b.db", "mobilenet") == first
    assert asked("c.db", "resnet34") != first
    assert all(1e-4 <= v <= 1e-2 for v in first)


def _fabricated_sweep(tmp_path: Path) -> Path:
    """A tuned sweep folder as the sweep leaves it: sweep.yaml and, per configuration, trial folders."""
    from benchmark.runs.plan import untuned

    cfg = tuned(tune_space={**LR_SPACE, "dropout": {"uniform": [0.0, 0.5]}}, tune_pruner="median")
    out = tmp_path / "sweep"
    out.mkdir()
    write_config(out, cfg, SWEEP_CONFIG)
    trials = {"mobilenet": [(1e-3, 0.1, "done", 0.71), (3e-3, 0.2, "done", 0.74), (5e-4, 0.3, "pruned", 0.55)],
              "resnet34": [(2e-3, 0.4, "done", 0.66), (1e-4, 0.0, "failed", None), (4e-3, 0.1, "done", 0.69)]}
    for conf, rows in trials.items():
        for k, (lr, dropout, status, val) in enumerate(rows):
            run_dir = out / RUNS / conf / f"trial-{k:03d}"
            run_dir.mkdir(parents=True)
            write_config(run_dir, untuned(cfg).replace(backbone=conf, learning_rate=lr, dropout=dropout), REQUESTED)
            (run_dir / HISTORY).write_text("epoch,val_auroc\n0,0.5\n" + (f"1,{val}\n" if val else ""))
            write_status(run_dir, status, **({"val_auroc": val} if status == "done" else {}), trial_seconds=60.0)
    return out


def test_tuning_block_read_from_trial_folders_without_optuna(tmp_path, monkeypatch):
    from reports.tuning import tuning_section, tuning_summary

    out = _fabricated_sweep(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` fails, as where it is not installed
    summary = tuning_summary(out)
    assert set(summary) == {"mobilenet", "resnet34"}
    m, r = summary["mobilenet"], summary["resnet34"]
    assert (m["trials"], m["pruned"], m["failed"], m["best_trial"], m["best_val"]) == (3, 1, 0, 1, 0.74)
    assert m["best_params"] == {"learning_rate": 3e-3, "dropout": 0.2}
    assert (r["trials"], r["pruned"], r["failed"], r["best_trial"], r["best_val"]) == (3, 0, 1, 2, 0.69)
    assert m["budget"]["trials"] == 3 and m["budget"]["pruner"] == "median"
    assert m["budget"]["spent_hours"] == pytest.approx(3 * 60 / 3600)
    section = tuning_section(out, summary, synthetic=True)
    assert section["figure"].startswith("data:image/png;base64,")
    assert section["importances"] == {}  # no Optuna: the page says it was not computed
    curve = dict(section["configurations"][0]["curve"])
    assert curve[1] == pytest.approx((0.71 + 0.74) / 2) and curve[2] == pytest.approx(0.71 / 4 + 0.74 * 3 / 4)
    from benchmark.runs.plan import plan_runs
    from benchmark.runs.rundir import read_config

    plan = dict(plan_runs(read_config(out, SWEEP_CONFIG), out))
    chosen = plan["mobilenet-best-s1"]
    assert (chosen.learning_rate, chosen.dropout, chosen.seed) == (3e-3, 0.2, 1)


def test_tuned_sweep_without_optuna_is_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    (tmp_path / "optuna.py").write_text("raise ImportError('optuna is absent in this test')\n")
    result = run_cli("sweep", "--config", CI_PROFILE, "--out", tmp_path / "s", "--set", "tune_trials=2",
                     "--set", "tune_space={learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}}", env=env)
    one_line_error(result, "Optuna", "pip install")
    assert not (tmp_path / "s").exists()


def _wait_for(predicate, proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("the sweep ended, or took too long, before the awaited state")


@pytest.mark.slow
def test_tuned_sweep_killed_resumed_reported_and_refused_when_changed(phantom, tmp_path):
    """The issue's scenario, small: two backbones x 2 trials of learning_rate, 1 epoch of 2 steps at 32 px."""
    from benchmark.runs.rundir import read_status

    out = tmp_path / "tuned"
    args = ["sweep", "--config", CI_PROFILE, "--out", out, "--data-root", phantom, "--set", "epochs=1",
            "--set", "steps_per_epoch=2", "--set", "gradcam_images=0", "--set", "tune_trials=2",
            "--set", "tune_space={learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}}"]
    first = out / RUNS / "mobilenet" / "trial-000"
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", *map(str, args)], cwd=Path(__file__).parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: read_status(first).get("status") == "done", proc, 300)
        proc.send_signal(signal.SIGKILL)  # the sweep dies while telling, or in the next trial
    finally:
        proc.kill()
        proc.wait()
    kept = (first / "train.log").read_bytes()

    # the same command resumes; on a loopback Ray cluster of 2 CPUs when Ray is installed (where runs go is not part
    # of the fingerprint), so that two trials run at once as Ray tasks
    ray = importlib.util.find_spec("ray") is not None
    where = ["--set", "ray_cpus_per_run=1", "--launcher", "ray", "--ray-address", "local"] if ray else []
    result = run_cli(*args, *where, env=dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (first / "train.log").read_bytes() == kept  # the finished trial was not run again
    lines = result.stdout.splitlines()
    started = [i for i, x in enumerate(lines) if "/trial-00" in x and ": training" in x]
    ended = [i for i, x in enumerate(lines) if "/trial-00" in x and ": done in" in x]
    assert len(started) == len(ended) == 3  # the rest of the budget: 1 trial of mobilenet (new or resumed), 2 of resnet34
    if ray:
        assert "Ray cluster (local)" in result.stdout and started[1] < ended[0]  # two trials at once
    assert "test mean auroc" not in "".join(x for x in result.stdout.splitlines() if "trial-" in x).lower()
    study_trials = {}
    for conf in ("mobilenet", "resnet34"):
        study = optuna.load_study(study_name=conf, storage=f"sqlite:///{out / 'tuning.db'}")
        study_trials[conf] = study.get_trials()
        assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE"]  # exactly the budget
        folders = sorted(p.name for p in (out / RUNS / conf).iterdir())
        assert folders == ["trial-000", "trial-001"]
        vals = {int(p.name[6:]): read_status(p)["val_auroc"] for p in (out / RUNS / conf).iterdir()}
        assert [t.value for t in study.get_trials()] == [vals[0], vals[1]]
        best = max(vals, key=lambda k: (vals[k], -k))
        asked = yaml.safe_load((out / RUNS / conf / f"trial-{best:03d}" / REQUESTED).read_text())
        final = yaml.safe_load((out / RUNS / f"{conf}-best-s1" / "config.yaml").read_text())
        assert final["learning_rate"] == asked["learning_rate"] == study.get_trials()[best].params["learning_rate"]
        assert final["seed"] == 1 and final["tune_space"] is None
        assert read_status(out / RUNS / f"{conf}-best-s1")["status"] == "done"

    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [r["run"] for r in summary["runs"]] == ["mobilenet-best-s1", "resnet34-best-s1"]
    for conf, trials in study_trials.items():
        block = summary["tuning"][conf]
        assert block["trials"] == 2 and block["pruned"] == 0
        assert block["best_val"] == max(t.value for t in trials)
        assert block["budget"]["trials"] == 2 and block["budget"]["space"] == {
            "learning_rate": {"log_uniform": [1.0e-4, 1.0e-2]}}
    page = (out / "report" / "index.html").read_text()
    assert 'id="tuning"' in page and 'id="trials-mobilenet"' in page and 'id="trials-resnet34"' in page
    assert "expected best validation AUROC against the number of trials" in page

    before = tree_state(out)
    changed = run_cli(*args[:-1], "tune_space={learning_rate: {log_uniform: [1.0e-4, 1.0e-1]}}")
    one_line_error(changed, "tune_space", str(out))
    assert tree_state(out) == before


class EpochWriter:
    """A launcher whose "run" writes, one epoch per poll, the history.csv and status.json a training run writes,
    with a validation AUROC that peaks at learning_rate 1e-3: the sweep's trial loop, budget, pruner and telling
    are exercised for real, without training (the run contract itself is tested with training below)."""

    def __init__(self, epochs: int, capacity: int = 1):
        self.epochs, self.capacity, self.started = epochs, capacity, []

    @staticmethod
    def score(lr: float, epoch: int) -> float:
        import math

        return 0.9 - abs(math.log10(lr) + 3) / 5 + 0.01 * epoch

    def start(self, job) -> None:
        asked = yaml.safe_load((job.run_dir / REQUESTED).read_text())
        job.handle = {"lr": asked["learning_rate"], "epoch": 0, "stopped": False}
        self.started.append(job.name)
        (job.run_dir / HISTORY).write_text("epoch,val_auroc\n")

    def poll(self, job):
        h = job.handle
        if h["stopped"]:
            write_status(job.run_dir, "interrupted", error="stopped")
            return 0
        if h["epoch"] < self.epochs:
            with open(job.run_dir / HISTORY, "a") as fh:
                fh.write(f"{h['epoch']},{self.score(h['lr'], h['epoch'])}\n")
            h["epoch"] += 1
            return None
        write_status(job.run_dir, "done", val_auroc=self.score(h["lr"], self.epochs - 1))
        return 0

    def stop(self, job, force: bool = False) -> None:
        job.handle["stopped"] = True

    def wait(self, job, timeout):
        return self.poll(job)

    def describe(self) -> str:
        return ""

    def close(self) -> None:
        pass


def _loop(tmp_path, launcher, **changes):
    from benchmark.runs.ownership import claim
    from benchmark.sweep.tune import run_trials

    cfg = tuned(**changes)
    out = claim(tmp_path / "sweep", "sweep", "a sweep folder", "")
    scheduler, todo = run_trials(out, cfg, launcher)
    assert scheduler is None or not scheduler.interrupted  # None: no trial was left to run
    studies = {name: optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'tuning.db'}")
               for name in ("mobilenet", "resnet34") if (out / RUNS / name).is_dir()}
    return out, todo, studies


def test_trial_loop_spends_exactly_the_budget_and_chooses_on_validation(tmp_path, capsys):
    from benchmark.runs.rundir import read_status

    launcher = EpochWriter(epochs=2, capacity=2)  # two at a time, as on two GPUs or Ray workers
    out, todo, studies = _loop(tmp_path, launcher, tune_trials=3, tune_sampler="random", epochs=2, tune_seeds=2)
    assert sorted(launcher.started) == [f"{c}/trial-00{k}" for c in ("mobilenet", "resnet34") for k in range(3)]
    for name, study in studies.items():
        trials = study.get_trials()
        assert [t.state.name for t in trials] == ["COMPLETE"] * 3
        best = max(trials, key=lambda t: (t.value, -t.number))
        assert best.value == pytest.approx(EpochWriter.score(best.params["learning_rate"], 1))
        chosen = dict(todo)[f"{name}-best-s1"]
        assert chosen.learning_rate == best.params["learning_rate"] and chosen.seed == 1
        assert dict(todo)[f"{name}-best-s2"].learning_rate == best.params["learning_rate"]
        assert all(read_status(out / RUNS / name / f"trial-00{k}")["trial_seconds"] > 0 for k in range(3))
    assert "test mean auroc" not in capsys.readouterr().out.lower()  # a trial's test score is never shown
    again = EpochWriter(epochs=2)
    _, todo_again, _ = _loop(tmp_path, again, tune_trials=3, tune_sampler="random", epochs=2, tune_seeds=2)
    assert again.started == [] and todo_again == todo  # a re-run finds the budget spent and the same choice


def test_hours_budget_is_kept_to_within_one_trial(tmp_path):
    budget_h = 2.0 / 3600  # two seconds; each trial takes at least the loop's 0.5 s poll per epoch
    _, _, studies = _loop(tmp_path, EpochWriter(epochs=2), tune_budget_hours=budget_h, tune_trials=None,
                          backbones=["mobilenet"], tune_sampler="random", epochs=2)
    seconds = [t.user_attrs["seconds"] for t in studies["mobilenet"].get_trials()]
    assert len(seconds) >= 2
    assert sum(seconds[:-1]) < budget_h * 3600 <= sum(seconds)  # the last trial started before it was spent


def test_pruned_trials_are_stopped_and_recorded_pruned(tmp_path):
    from benchmark.runs.rundir import read_status
    from benchmark.sweep.tune import MEDIAN_STARTUP

    out, _, studies = _loop(tmp_path, EpochWriter(epochs=3), tune_trials=6, tune_pruner="median", epochs=3,
                            backbones=["mobilenet"], tune_sampler="random")
    trials = studies["mobilenet"].get_trials()
    assert len(trials) == 6
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(t.number >= MEDIAN_STARTUP for t in pruned)
    for t in trials:
        status = read_status(out / RUNS / "mobilenet" / f"trial-{t.number:03d}")
        assert status["status"] == ("pruned" if t in pruned else "done")
    for t in pruned:  # stopped before its last epoch, below the median of the finished trials at its last step
        step = max(t.intermediate_values)
        assert 1 <= step < 2
        finished = sorted(u.intermediate_values[step] for u in trials
                          if u.state.name == "COMPLETE" and u.number < t.number)
        import statistics

        assert max(t.intermediate_values.values()) < statistics.median(finished)


def test_retrain_names_a_configuration_for_its_chosen_runs(tmp_path):
    from benchmark.runs.plan import runs_named

    out = _fabricated_sweep(tmp_path)
    cfg = tuned(tune_seeds=2)
    assert runs_named(cfg, ["mobilenet", "resnet34-best-s2"], out) == [
        "mobilenet-best-s1", "mobilenet-best-s2", "resnet34-best-s2"]
    with pytest.raises(UserError, match="resnet34 has no finished trial"):  # a sweep whose trials never ran
        runs_named(cfg, ["resnet34"], tmp_path / "elsewhere")



def test_hyperparameter_importance_from_the_studies(tmp_path):
    from benchmark.sweep.tune import distributions, open_study
    from reports.tuning import importances

    cfg = tuned(tune_space={**LR_SPACE, "dropout": {"uniform": [0.0, 0.5]}}, tune_trials=6)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'tuning.db'}")
    for n in range(6):  # the value follows dropout alone
        study = open_study(optuna, storage, cfg, "mobilenet", n)
        trial = study.ask(distributions(optuna, cfg.tune_space))
        study.tell(trial.number, 0.5 + trial.params["dropout"])
    found = importances(tmp_path, cfg)
    assert set(found) == {"mobilenet"} and set(found["mobilenet"]) == {"learning_rate", "dropout"}
    assert sum(found["mobilenet"].values()) == pytest.approx(1.0)
    assert importances(tmp_path, tuned()) == {}  # one tuned key: nothing to rank


def test_probability_of_ranking_first_resamples_patients_and_seeds():
    import numpy as np

    from benchmark.evaluation.compare import Configuration
    from reports.tuning import rank_first

    def conf(name, *runs):  # each run: its resampled AUROCs (B x 2 labels); label 1 unsupported in b
        resampled = [np.column_stack([np.asarray(r, float), np.full(len(r), 0.5)]) for r in runs]
        aurocs = np.array([[np.mean(r), 0.5] for r in runs])
        return Configuration(name, [{"name": f"{name}-{i}"} for i in range(len(runs))], aurocs, resampled)

    a = conf("a", [0.70, 0.80, 0.60, 0.90])
    b = conf("b", [0.75, 0.70, 0.65, 0.80])
    b.aurocs[0, 1] = np.nan  # label 1 is left out for every configuration: the macro is label 0 alone
    assert rank_first([a, b]) == {"a": 0.5, "b": 0.5}  # a wins resamples 2 and 4, by hand
    n = 4000
    always, never = [0.9] * n, [0.1] * n  # a's two seeds: one beats c at every resample, one never does
    shares = rank_first([conf("a", always, never), conf("c", [0.5] * n)])
    assert shares["a"] == pytest.approx(0.5, abs=0.03) and shares["a"] + shares["c"] == pytest.approx(1.0)
    assert rank_first([a]) is None

"""Tuning: every configuration of a sweep (a grid point without the tuned keys: each backbone x policy x image size
...) gets the same search space and the same budget, so that a comparison is of architectures, not of the one
recipe that happened to suit one of them (Dodge et al., "Show Your Work", EMNLP 2019).

- **Engine.** Optuna (the `[tune]` extra, imported only here and only by a tuning sweep), one study per
  configuration in `SWEEP/tuning.db` (SQLite), asked and told by the sweep's own process only.
- **Trials are runs.** Each trial is an ordinary run folder, `runs/<configuration>/trial-NNN/`, started by the
  sweep's launcher (local slots, --gpus, Ray), so locks, fingerprints, resume, run_timeout and failure isolation
  are the runs'. A pruned trial is stopped like a timed-out one and recorded `pruned` (not `failed`).
- **Resume.** A trial the study still holds as running (the sweep was killed) is started again in its folder and
  continues from its last epoch; one whose folder says it ended is told from the folder. Each ask uses a sampler
  seeded by (seed, configuration, trial number), so a re-run asks the same trials as an uninterrupted sweep.
- **Selection on validation only.** The chosen trial of a configuration is its finished trial with the best
  validation mean AUROC (ties: the earlier trial); its setting is then trained with `tune_seeds` fresh seeds
  (seed+1, seed+2, ...: not the trial's own seed, so that the lucky draw that won on validation is not the one
  compared on test), in `runs/<configuration>-best-s<seed>/`; those runs are the sweep's plan, the ones the report
  compares. Everything selection needs is read from the run folders, so the report needs no Optuna.
"""

from __future__ import annotations

import re
import time
import zlib
from pathlib import Path

from benchmark.errors import UserError
from benchmark.runs.plan import (
    DB,
    PRUNED,
    chosen_trial,
    configurations,
    final_plan,
    is_finite,
    trial_name,
    trials_of,
    untuned,
    val_history,
)

INSTALL_HINT = 'pip install -e ".[tune]" (or: pip install "optuna>=5.0,<5.1")'
MEDIAN_STARTUP, MEDIAN_WARMUP = 3, 1  # the median pruner waits for 3 finished trials and prunes from epoch 1 on


# --- the studies (Optuna) ----------------------------------------------------------------------------------

def import_optuna():
    """Optuna, or a UserError with the install hint; its per-trial log lines are silenced (the sweep prints)."""
    try:
        import optuna
    except ImportError:
        raise UserError(f"tune_space needs Optuna, which is not installed: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(optuna, space: dict) -> dict:
    d = optuna.distributions
    out = {}
    for name, spec in space.items():
        kind, values = next(iter(spec.items()))
        if kind == "choice":
            out[name] = d.CategoricalDistribution(list(values))
        elif kind == "int":
            out[name] = d.IntDistribution(int(values[0]), int(values[1]))
        else:
            out[name] = d.FloatDistribution(float(values[0]), float(values[1]), log=kind == "log_uniform")
    return out


def make_pruner(optuna, cfg):
    if cfg.tune_pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=MEDIAN_WARMUP)
    if cfg.tune_pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, cfg.epochs), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(optuna, storage, cfg, configuration: str, asked: int = 0):
    """The configuration's study, with a sampler seeded by (seed, configuration, trials asked so far): a re-run
    after an interruption asks what an uninterrupted sweep would have asked."""
    seed = zlib.crc32(f"{cfg.seed}:{configuration}:{asked}".encode())
    sampler = (optuna.samplers.RandomSampler(seed=seed) if cfg.tune_sampler == "random"
               else optuna.samplers.TPESampler(seed=seed))
    return optuna.create_study(study_name=configuration, storage=storage, direction="maximize", sampler=sampler,
                               pruner=make_pruner(optuna, cfg), load_if_exists=True)


def spent_hours(study) -> float:
    return sum(t.user_attrs.get("seconds", 0.0) for t in study.get_trials(deepcopy=False)) / 3600


def has_budget(study, cfg) -> bool:
    """Another trial may start: fewer than tune_trials asked, and tune_budget_hours not yet spent."""
    if cfg.tune_trials is not None and len(study.get_trials(deepcopy=False)) >= cfg.tune_trials:
        return False
    return cfg.tune_budget_hours is None or spent_hours(study) < cfg.tune_budget_hours


def settle(optuna, study, number: int, run_dir: Path, seconds: float | None = None) -> str | None:
    """Tell the study how trial `number` ended, as its folder records it: done (its validation AUROC), pruned or
    failed. Returns that state, or None while the trial has not ended (it is to be started or resumed)."""
    from benchmark.runs.rundir import read_status

    status = read_status(run_dir)
    state = status.get("status")
    if state not in ("done", PRUNED, "failed"):
        return None
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    if seconds is None:
        seconds = status.get("trial_seconds", 0.0)
    optuna.trial.Trial(study, trial._trial_id).set_user_attr("seconds", float(seconds or 0.0))
    S = optuna.trial.TrialState
    if state == "done" and is_finite(status.get("val_auroc")):
        study.tell(number, float(status["val_auroc"]))
    elif state == PRUNED:
        study.tell(number, state=S.PRUNED)
    else:  # failed, or done without a validation AUROC (too few positives for any label)
        study.tell(number, state=S.FAIL)
    return state


def report_epochs(optuna, study, number: int, run_dir: Path) -> bool:
    """Report the trial's new epochs (validation mean AUROC from history.csv) and ask the pruner: True when it
    should stop."""
    from benchmark.runs.rundir import HISTORY

    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    trial = optuna.trial.Trial(study, frozen._trial_id)
    reported = set(frozen.intermediate_values)
    for epoch, val in val_history(run_dir / HISTORY):
        if epoch not in reported:
            trial.report(val, epoch)
    return bool(trial.should_prune())


# --- running the trials --------------------------------------------------------------------------------------

def run_trials(out: Path, cfg, launcher):
    """Run every configuration's trials until its budget is spent, in rounds of up to the launcher's capacity
    (configurations in turn). Returns the last round's scheduler (its `interrupted` says whether to stop) and the
    final runs to train."""
    from benchmark.config import merge

    optuna = import_optuna()
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(out).resolve() / DB}")
    confs = dict(configurations(cfg))
    space = distributions(optuna, cfg.tune_space)
    scheduler = None
    while True:
        studies = {name: open_study(optuna, storage, cfg, name) for name in confs}
        batch = _resumable(optuna, studies, out)
        added = True
        while len(batch) < launcher.capacity and added:
            added = False
            for name in confs:
                if len(batch) < launcher.capacity and has_budget(studies[name], cfg):
                    asked = len(studies[name].get_trials(deepcopy=False))
                    trial = open_study(optuna, storage, cfg, name, asked).ask(space)
                    batch.append((name, trial.number, trial.params))
                    added = True
        if not batch:
            return scheduler, trainable_finals(out, cfg)
        runs = [(trial_name(name, n), merge(confs[name], params, "tune_space")) for name, n, params in batch]
        scheduler = TrialScheduler(out, runs, launcher, cfg.run_timeout, total=cfg.tune_trials or "?",
                                   index={trial_name(name, n): n + 1 for name, n, _ in batch}, optuna=optuna,
                                   studies={trial_name(name, n): (studies[name], n) for name, n, _ in batch},
                                   prune=cfg.tune_pruner != "none")
        scheduler.run()
        if scheduler.interrupted:
            return scheduler, []


def trainable_finals(out: Path, cfg) -> list:
    """The final runs whose configuration has a chosen trial; those of a configuration without one (every trial
    failed or was pruned) are recorded failed, saying so, rather than trained with the untuned values."""
    from benchmark.runs.ownership import claim
    from benchmark.runs.rundir import RUNS, read_status, write_status

    runs = []
    for name, conf in final_plan(cfg, out):
        configuration = name.rsplit("-best-s", 1)[0]
        if chosen_trial(out, configuration, cfg.tune_space) is not None:
            runs.append((name, conf))
            continue
        run_dir = claim(Path(out) / RUNS / name, "run", "a run directory", f"move it out of {Path(out) / RUNS}")
        if read_status(run_dir).get("status") != "failed":
            states = [t["status"] for t in trials_of(out, configuration, cfg.tune_space)]
            write_status(run_dir, "failed", error=f"no trial of {configuration} finished with a validation AUROC "
                         f"({states.count('failed')} failed, {states.count(PRUNED)} pruned); see "
                         f"{Path(out) / RUNS / configuration}/trial-*/train.log")
    return runs


def _resumable(optuna, studies: dict, out: Path) -> list:
    """Trials the studies hold as running: told from their folders if they ended (the sweep died before telling),
    else to be started again (they resume after their last finished epoch)."""
    from benchmark.runs.rundir import RUNS

    left = []
    for name, study in studies.items():
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if settle(optuna, study, t.number, Path(out) / RUNS / trial_name(name, t.number)) is None:
                left.append((name, t.number, t.params))
    return left


def _scheduler_base():
    from benchmark.sweep.scheduler import Scheduler

    return Scheduler


class TrialScheduler(_scheduler_base()):
    """The sweep's scheduler for trials: it also asks the pruner after each epoch, stops a pruned trial, records
    it `pruned`, tells each study how its trial ended, and shows validation scores only (a trial's test scores are
    neither shown nor used)."""

    def __init__(self, out, runs, launcher, run_timeout, total, index, optuna, studies: dict, prune: bool):
        super().__init__(out, runs, launcher, run_timeout, total=total, index=index)  # [trial/budget] name
        self.optuna, self.studies, self.prune = optuna, studies, prune
        self.seen: dict = {}  # history.csv's modification time when the pruner last looked

    def _enforce_timeout(self, job) -> None:
        super()._enforce_timeout(job)
        if not self.prune or getattr(job, "pruned", False):
            return
        from benchmark.runs.rundir import HISTORY

        history = job.run_dir / HISTORY
        stamp = history.stat().st_mtime_ns if history.is_file() else None
        if stamp is None or self.seen.get(job.name) == stamp:
            return
        self.seen[job.name] = stamp
        study, number = self.studies[job.name]
        if report_epochs(self.optuna, study, number, job.run_dir):
            job.pruned = True
            print(f"[{job.index}/{self.total}] {job.name}: pruned (its validation AUROC is below the others' at "
                  f"the same epoch); stopping it", flush=True)
            self.launcher.stop(job)

    def _record(self, job, code: int) -> None:
        from benchmark.runs.rundir import read_status, write_status

        seconds = time.perf_counter() - job.started
        status = read_status(job.run_dir)
        study, number = self.studies[job.name]
        if status.get("status") == "done":
            write_status(job.run_dir, "done", **{k: v for k, v in status.items() if k != "status"},
                         trial_seconds=seconds)
            print(f"[{job.index}/{self.total}] {job.name}: done in {_fmt_s(seconds)}, validation mean AUROC "
                  f"{_fmt_v(status.get('val_auroc'))}", flush=True)
        elif getattr(job, "pruned", False):
            history = val_history(job.run_dir / "history.csv")
            write_status(job.run_dir, PRUNED, epochs=len(history), trial_seconds=seconds,
                         val_auroc_last=history[-1][1] if history else None)
        else:
            super()._record(job, code)  # failed, with its error
        settle(self.optuna, study, number, job.run_dir, seconds)

    def _echo_progress(self, job) -> None:
        """The run's progress lines, as for any run, without its test scores."""
        import contextlib
        import sys

        with contextlib.redirect_stdout(_WithoutTestScores(sys.stdout)):
            super()._echo_progress(job)


class _WithoutTestScores:
    """A text stream passing on whole lines, except those that show a test score."""

    TEST_SCORE = re.compile(r"\btest (mean )?AUROC\b", re.IGNORECASE)

    def __init__(self, stream):
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            if not self.TEST_SCORE.search(line):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _fmt_s(seconds: float) -> str:
    from benchmark.sweep.scheduler import fmt_time

    return fmt_time(seconds)


def _fmt_v(v) -> str:
    return f"{v:.3f}" if is_finite(v) else "n/a"


# --- what tuning costs -------------------------------------------------------------------------------------

def measure_overhead(trials: int = 20, folder: str | None = None) -> dict:
    """Seconds the tuning bookkeeping adds per trial beyond the run itself (open the study, ask, write the trial's
    requested.yaml, read its history for the pruner, tell), on fabricated trial folders: no training."""
    import tempfile

    from benchmark.config import load_config
    from benchmark.runs.rundir import HISTORY, REQUESTED, write_config, write_status

    optuna = import_optuna()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        cfg = load_config(None, {"tune_trials": trials, "tune_pruner": "median", "epochs": 3,
                                 "tune_space": {"learning_rate": {"log_uniform": [1e-4, 1e-2]},
                                                "dropout": {"uniform": [0.0, 0.5]}}})
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp}/{DB}")
        space = distributions(optuna, cfg.tune_space)
        spent = []
        for n in range(trials):
            t0 = time.perf_counter()
            study = open_study(optuna, storage, cfg, "c", n)
            trial = study.ask(space)
            run_dir = Path(tmp) / "runs" / trial_name("c", trial.number)
            run_dir.mkdir(parents=True)
            write_config(run_dir, untuned(cfg).replace(**trial.params), REQUESTED)
            spent.append(time.perf_counter() - t0)
            (run_dir / HISTORY).write_text("epoch,val_auroc\n" + "".join(
                f"{e},{0.5 + 0.1 * trial.params['dropout'] + 0.01 * e}\n" for e in range(3)))
            write_status(run_dir, "done", val_auroc=0.6 + trial.params["dropout"] / 10)
            t0 = time.perf_counter()
            report_epochs(optuna, study, trial.number, run_dir)
            settle(optuna, study, trial.number, run_dir, 1.0)
            spent[-1] += time.perf_counter() - t0
    return {"trials": trials, "mean_s": sum(spent) / len(spent), "max_s": max(spent)}

"""run_timeout never fails a finished run: the child's status.json is authoritative, and the timer counts from the
run's start, not from its queueing. The sweep's real Scheduler drives launchers whose runs behave as described
(no training)."""

import json
import time

from benchmark.config import Config
from benchmark.runs.ownership import claim
from benchmark.runs.rundir import TRAIN_LOG, write_status
from benchmark.sweep.contract import Launcher
from benchmark.sweep.scheduler import Scheduler


class _Scripted(Launcher):
    """Runs that do what `script(job, seconds_since_start)` says each poll; `stop` ends them at the next poll."""

    def __init__(self, script, queues=False):
        self.script, self.queues, self.stopped, self.t0 = script, queues, set(), {}

    def start(self, job):
        self.t0[job.name] = time.perf_counter()

    def poll(self, job):
        if job.name in self.stopped:
            return -15
        return self.script(job, time.perf_counter() - self.t0[job.name])

    def stop(self, job, force=False):
        self.stopped.add(job.name)

    def wait(self, job, timeout):
        return self.poll(job)


def _schedule(tmp_path, launcher, run_timeout):
    out = claim(tmp_path / "sweep", "sweep", "a sweep folder", "")
    scheduler = Scheduler(out, [("r", Config())], launcher, run_timeout)
    scheduler.run()
    return json.loads((out / "runs" / "r" / "status.json").read_text())


def test_a_run_that_finished_but_hangs_at_exit_stays_done(tmp_path, capsys):
    def finished_then_hangs(job, seconds):
        if not (job.run_dir / "status.json").is_file():
            write_status(job.run_dir, "done", test_auroc=0.75)
        return None  # the process does not exit (a driver stuck at exit)

    status = _schedule(tmp_path, _Scripted(finished_then_hangs), run_timeout=1.0)
    assert status == {"status": "done", "test_auroc": 0.75}
    assert "r: done in" in capsys.readouterr().out


def test_the_timer_counts_from_the_runs_start_not_its_queueing(tmp_path):
    def queued_then_runs(job, seconds):
        if seconds < 2.0:  # waiting for a node
            return None
        log = job.run_dir / TRAIN_LOG
        if not log.is_file() or "running on node" not in log.read_text():
            log.write_text("running on node test/0\n")
        if seconds >= 3.0:  # one second of work: well inside run_timeout
            write_status(job.run_dir, "done", test_auroc=0.5)
            return 0
        return None

    status = _schedule(tmp_path, _Scripted(queued_then_runs, queues=True), run_timeout=1.6)
    assert status == {"status": "done", "test_auroc": 0.5}


def test_a_run_that_hangs_without_finishing_is_still_stopped_and_failed(tmp_path):
    status = _schedule(tmp_path, _Scripted(lambda job, seconds: None), run_timeout=1.0)
    assert status["status"] == "failed" and "run_timeout=1 s" in status["error"]

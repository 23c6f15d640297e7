"""Real interruptions: kill -9 and Ctrl-C in the middle of a trial, then the same command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import ROOT, simple_site, write_flux_csv
from optuna.trial import TrialState

from dlfm_auto.study import open_storage

N = 3


@pytest.fixture
def setup(tmp_path):
    site = write_flux_csv(tmp_path / "site.csv", simple_site(days=4 * 365))
    url = f"sqlite:///{tmp_path}/f.db"
    cmd = [sys.executable, "-m", "dlfm_auto", "run-study", "lstm", "--data", str(site),
           "--target", "NEE", "--columns", "TA", "PPFD_IN", "--eval-years", "1", "--folds", "2",
           "--sequence-length", "7", "--n-trials", str(N), "--max-epochs", "150",
           "--patience", "1000", "--pruner", "none", "--storage", url, "--study-name", "f",
           "--quiet"]
    env = {**os.environ, "DLFM_AUTO_HEARTBEAT": "1", "DLFM_AUTO_GRACE": "3"}
    return cmd, env, url


def _trials(url):
    storage = open_storage(url, heartbeat=False)
    try:
        return optuna.load_study(study_name="f", storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


def _start_and_wait_for_second_trial(cmd, env, url):
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        ts = _trials(url)
        done = [t for t in ts if t.state == TrialState.COMPLETE]
        running = [t for t in ts if t.state == TrialState.RUNNING]
        if done and running:
            time.sleep(0.5)  # into the trial's training, past its parameter draws
            return proc, running[0]
        if proc.poll() is not None:
            raise AssertionError(f"study ended early: {proc.stderr.read()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no second trial started in time")


@pytest.mark.slow
def test_kill_9_mid_trial_then_rerun(setup):
    cmd, env, url = setup
    proc, _ = _start_and_wait_for_second_trial(cmd, env, url)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The victim is whichever trial the kill left RUNNING (the one seen running a moment
    # before may have finished in between: asking afterwards leaves no race).
    left = [t for t in _trials(url) if t.state == TrialState.RUNNING]
    assert len(left) == 1
    victim = left[0]
    time.sleep(4)  # longer than the grace period: the heartbeat is now stale
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ts = _trials(url)
    states = [t.state for t in ts]
    assert states.count(TrialState.COMPLETE) == N
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    dead = next(t for t in ts if t.number == victim.number)
    assert dead.state == TrialState.FAIL
    retry = [t for t in ts if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    # Re-run with every parameter the dead trial had drawn (a kill during its first
    # milliseconds can leave some undrawn: those are drawn afresh).
    assert dead.params and dead.params.items() <= retry[0].params.items()


@pytest.mark.slow
def test_ctrl_c_mid_trial_then_rerun(setup):
    cmd, env, url = setup
    proc, _ = _start_and_wait_for_second_trial(cmd, env, url)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    interrupted = [t for t in _trials(url) if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    dead = interrupted[0]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ts = _trials(url)
    assert [t.state for t in ts].count(TrialState.COMPLETE) == N
    retry = [t for t in ts if t.user_attrs.get("retry_of") == dead.number]
    assert len(retry) == 1 and dead.params and dead.params.items() <= retry[0].params.items()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_grid_soak_kill_9_then_one_rerun(tmp_path, backend):
    """bench_soak.py with 3 kills: every grid point finished once, none RUNNING, exit 0."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_soak import PG_URL, _site, soak
    from test_study import _pg_available

    if backend == "postgresql" and not _pg_available():
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432")
    url = f"sqlite:///{tmp_path}/soak.db" if backend == "sqlite" else PG_URL
    res = soak(url, kills=3, seed=1, site=_site(tmp_path))
    assert res["ok"], res
    assert res["rerun_exit"] == 0 and res["distinct_points"] == res["finished"] == 32
    assert res["running"] == res["waiting"] == res["points_run_twice"] == 0
    assert res["failed"] == res["running_when_killed"]  # only killed trials failed


def test_requeue_never_queues_a_point_whose_trial_finished_after_all(tmp_path):
    """A trial judged stale (late heartbeat) whose owner completed it before the FAIL landed:
    the stale callback must not queue its point again (it would run twice)."""
    from dlfm_auto.study._storage import requeue

    for url in (f"sqlite:///{tmp_path}/r.db", f"journal:///{tmp_path}/r.journal"):
        study = optuna.create_study(storage=open_storage(url), study_name="r")
        study.enqueue_trial({"x": 1})
        t = study.ask()
        study.tell(t, 1.0)
        done = study.get_trials()[0]
        assert done.state == TrialState.COMPLETE
        assert requeue(study, done) is False
        assert [x.state for x in study.get_trials()] == [TrialState.COMPLETE]
        # a trial that did fail is re-queued with its whole point
        study.enqueue_trial({"x": 2})
        t2 = study.ask()
        study.tell(t2, state=TrialState.FAIL)
        assert requeue(study, study.get_trials()[1]) is True
        assert study.get_trials()[-1].state == TrialState.WAITING
        assert study.get_trials()[-1].system_attrs["fixed_params"] == {"x": 2}

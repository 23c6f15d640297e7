"""Studies: run, resume, totals, grid parity, refusal of changed settings, storage errors.

Every storage-dependent test runs on SQLite, the journal file backend, and PostgreSQL (skipped
with a reason when no server answers on 127.0.0.1:5432).
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import uuid

import optuna
import pytest
from conftest import ROOT, UMB, needs_shared, simple_site, write_flux_csv
from optuna.trial import TrialState

from dlfm_auto import UserError
from dlfm_auto.cli import main
from dlfm_auto.data import PrepareConfig
from dlfm_auto.study import build_spec, create_or_resume, open_storage
from dlfm_auto.study._objective import grid_points
from dlfm_auto.study._processes import run_workers
from dlfm_auto.study._worker import WorkerOptions, work

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test",
                        connect_timeout=3).close()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    if request.param == "journal":
        return f"journal:///{tmp_path}/s.journal"
    if not _pg_available():
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432 (.ci/run starts it)")
    return PG_URL


@pytest.fixture(scope="module")
def small_site(tmp_path_factory):
    return write_flux_csv(tmp_path_factory.mktemp("site") / "site.csv", simple_site(days=4 * 365))


def _prep(path, **kw):
    return PrepareConfig(data=str(path), target="NEE", columns=("TA", "PPFD_IN"),
                         eval_years=1, folds=2, **kw)


def _unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _states(url: str, name: str) -> dict[str, int]:
    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def test_total_trials_and_resume(storage_url, small_site):
    name = _unique("ann")
    spec = build_spec("ann", _prep(small_site), length_given=True, n_trials=3, max_epochs=2,
                      pruner="none")
    create_or_resume(storage_url, name, spec)
    assert work(WorkerOptions(storage_url, name)) == 3
    assert _states(storage_url, name) == {"COMPLETE": 3}
    # the same command again: nothing more to do (--n-trials is a total)
    create_or_resume(storage_url, name, spec)
    assert work(WorkerOptions(storage_url, name)) == 0
    # a larger total continues the same study
    create_or_resume(storage_url, name, spec.replace(n_trials=4))
    assert work(WorkerOptions(storage_url, name)) == 1
    study = optuna.load_study(study_name=name, storage=open_storage(storage_url, heartbeat=False))
    t = study.best_trial
    assert len(t.user_attrs["fold_r2"]) == 2 and len(t.user_attrs["fold_mse"]) == 2
    assert t.user_attrs["n_train"][0] > 100
    ua = study.user_attrs
    assert ua["data_sha256"] and ua["target"] == "NEE" and ua["versions"]["optuna"]
    assert ua["dlfm_auto.spec"]["prep"]["folds"] == 2


def test_changed_settings_are_refused(tmp_path, small_site):
    url = f"sqlite:///{tmp_path}/s.db"
    spec = build_spec("ann", _prep(small_site), length_given=True, n_trials=1, max_epochs=1)
    create_or_resume(url, "x", spec)
    other = build_spec("ann", _prep(small_site, ustar_threshold=0.3), length_given=True,
                       n_trials=1, max_epochs=1)
    with pytest.raises(UserError, match="ustar_threshold"):
        create_or_resume(url, "x", other)
    moved = write_flux_csv(tmp_path / "other.csv", simple_site(days=4 * 365, seed=5))
    with pytest.raises(UserError, match="data_sha256"):
        create_or_resume(url, "x", build_spec("ann", _prep(moved), length_given=True,
                                              n_trials=1, max_epochs=1))


@pytest.mark.slow  # two spawned worker processes (about 35 s on 2 cores)
def test_grid_covers_every_point_once_with_two_workers(tmp_path, small_site):
    url = f"sqlite:///{tmp_path}/g.db"
    spec = build_spec("lstm", _prep(small_site, sequence_length=3), length_given=True,
                      sampler="grid", max_epochs=2, pruner="none")
    assert len(grid_points(spec)) == 64
    create_or_resume(url, "grid", spec)
    # stop after a few trials (an interruption), then resume with two worker processes
    work(WorkerOptions(url, "grid", max_trials=5))
    create_or_resume(url, "grid", spec)
    run_workers(WorkerOptions(url, "grid"), n_jobs=2, artifacts_dir=None)
    study = optuna.load_study(study_name="grid", storage=open_storage(url, heartbeat=False))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    keys = {tuple(sorted(t.params.items())) for t in done}
    assert len(done) == 64 and len(keys) == 64
    assert {tuple(sorted(p.items())) for p in grid_points(spec)} == keys


def test_sqlite_file_errors_leave_the_file_untouched(tmp_path):
    def digest(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.commit()
    con.close()
    for path, needle in ((corrupt, "not a SQLite database"), (foreign, "another application")):
        before = digest(path)
        with pytest.raises(UserError, match=needle):
            open_storage(f"sqlite:///{path}")
        assert digest(path) == before

    locked = tmp_path / "locked.db"
    open_storage(f"sqlite:///{locked}")  # a valid Optuna database
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]); "
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(30)",
         str(locked)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = digest(locked)
        with pytest.raises(UserError, match="locked"):
            open_storage(f"sqlite:///{locked}")
        assert digest(locked) == before
    finally:
        holder.kill()
        holder.wait()


def test_cli_run_study_studies_best(tmp_path, small_site, capsys):
    url = f"sqlite:///{tmp_path}/c.db"
    args = ["run-study", "ann", "--data", str(small_site), "--target", "NEE", "--columns", "TA",
            "PPFD_IN", "--eval-years", "1", "--folds", "2", "--n-trials", "2",
            "--max-epochs", "2", "--storage", url, "--study-name", "cli", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best CV R²" in out and "optuna-dashboard" in out and "2 complete" in out
    assert main(["studies", "--storage", url]) == 0
    assert "cli" in capsys.readouterr().out
    assert main(["best", "cli", "--storage", url, "--json"]) == 0
    import json

    best = json.loads(capsys.readouterr().out)
    assert best["counts"]["complete"] == 2 and "lr" in " ".join(best["params"])
    # issue 10: baselines on the same folds, skill vs climatology, anomaly R²
    for name in ("climatology", "linear"):
        assert set(best["baselines"][name]) == {"cv_r2", "cv_mse"}
    clim = best["baselines"]["climatology"]["cv_mse"]
    assert best["skill_vs_climatology"] == pytest.approx(1 - best["cv_mse"] / clim)
    assert best["anomaly_r2"] is not None and best["anomaly_r2"] < best["value"]
    assert main(["best", "cli", "--storage", url]) == 0
    assert "skill vs climatology" in capsys.readouterr().out
    assert main(["best", "nope", "--storage", url]) == 2
    # the best trial's fold models were stored as an artifact, loadable without retraining
    from dlfm_auto.study import load_best_models

    study = optuna.load_study(study_name="cli", storage=open_storage(url, heartbeat=False))
    payload = load_best_models(study, str(tmp_path / "artifacts"))
    assert payload["trial"] == study.best_trial.number and len(payload["folds"]) == 2
    assert payload["folds"][0]["kind"] == "torch" and payload["folds"][0]["norm"]["mean"]


def test_run_study_without_data_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run-study", "lstm"]) == 2
    err = capsys.readouterr().err
    assert "demo-data" in err and "--data" in err


def test_unknown_family_lists_close_matches(capsys):
    res = subprocess.run([sys.executable, "-m", "dlfm_auto", "run-study", "lstn", "--data",
                          "x.csv"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "lstm" in res.stderr and "Traceback" not in res.stderr


def test_worker_refuses_a_different_local_data_file(tmp_path, small_site, capsys):
    url = f"sqlite:///{tmp_path}/w.db"
    spec = build_spec("ann", _prep(small_site), length_given=True, n_trials=1, max_epochs=1)
    create_or_resume(url, "w", spec)
    other = write_flux_csv(tmp_path / "other.csv", simple_site(days=4 * 365, seed=9))
    assert main(["worker", "w", "--storage", url, "--data", str(other)]) == 2
    assert "differs from the study's" in capsys.readouterr().err
    assert main(["worker", "w", "--storage", url, "--data", str(small_site)]) == 0
    assert _states(url, "w") == {"COMPLETE": 1}


def test_wilcoxon_pruner_needs_five_folds(tmp_path, small_site, capsys):
    with pytest.raises(UserError, match="folds >= 5"):
        build_spec("ann", _prep(small_site), length_given=True, pruner="wilcoxon")
    rc = main(["run-study", "ann", "--data", str(small_site), "--target", "NEE", "--columns",
               "TA", "PPFD_IN", "--pruner", "wilcoxon", "--storage", f"sqlite:///{tmp_path}/w.db"])
    assert rc == 2 and "Traceback" not in capsys.readouterr().err


def test_wilcoxon_pruner_stops_a_trial_worse_on_every_fold(tmp_path):
    """Per-fold pruning: a hopeless trial is stopped before its last (5th) fold."""
    site = write_flux_csv(tmp_path / "site7.csv", simple_site(days=7 * 365))
    prep = PrepareConfig(data=str(site), target="NEE", columns=("TA", "PPFD_IN"), eval_years=1,
                         folds=5)
    url, name = f"sqlite:///{tmp_path}/w.db", "w"
    study = create_or_resume(url, name, build_spec("ann", prep, length_given=True,
                                                   pruner="wilcoxon", n_trials=2, max_epochs=30))
    good = {"feed": "today", "layer_size": 8, "optimizer": "adam", "lr": 0.01,
            "weight_decay": 1e-6, "batch_size": 64, "epochs": 200}
    study.enqueue_trial(good)
    study.enqueue_trial({**good, "optimizer": "sgd", "lr": 1e-4, "layer_size": 4})  # barely learns
    work(WorkerOptions(url, name))
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert max(trials[1].intermediate_values) < 4  # stopped before fold 5 (steps 0..4)


# ---------------------------------------------------------------------------------------------
# Robust operations (issues 11 and 14): totals, failures, passwords, bad inputs, concurrency.


def _snapshot(folder):
    """Every file under ``folder`` with its content hash: 'nothing else changed' checks."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli_args(site, url, *extra):
    return ["run-study", "ann", "--data", str(site), "--target", "NEE", "--columns", "TA",
            "PPFD_IN", "--eval-years", "1", "--folds", "2", "--max-epochs", "2",
            "--storage", url, "--quiet", *extra]


def test_no_total_worker_runs_exactly_what_it_asks(storage_url, small_site, capsys):
    """--n-trials 0 then `worker --n-trials N`: N trials that complete, none failed."""
    name = _unique("free")
    assert main(_cli_args(small_site, storage_url, "--study-name", name, "--n-trials", "0",
                          "--n-jobs", "0", "--sampler", "random")) == 0
    capsys.readouterr()
    for _ in range(2):  # two workers, one after the other, 2 trials each
        assert main(["worker", name, "--storage", storage_url, "--n-trials", "2"]) == 0
        assert "ran 2 trial(s)" in capsys.readouterr().out
    assert _states(storage_url, name) == {"COMPLETE": 4}


def test_failing_trials_are_shown_once_and_exit_nonzero(tmp_path, small_site, capsys,
                                                        monkeypatch):
    from dlfm_auto.study._objective import Objective

    def boom(self, trial):
        raise ValueError("boom in the objective")

    monkeypatch.setattr(Objective, "_run", boom)
    url = f"sqlite:///{tmp_path}/f.db"
    assert main(_cli_args(small_site, url, "--study-name", "f", "--n-trials", "5")) == 1
    cap = capsys.readouterr()
    first = [ln for ln in cap.err.splitlines() if "boom" in ln]
    assert len(first) == 1 and "trial 0 failed: ValueError: boom" in first[0]
    assert "'traceback'" in first[0] and "Traceback" not in cap.err
    assert "3 failed" in cap.out  # counted; the worker stopped after 3 failures in a row
    study = optuna.load_study(study_name="f", storage=open_storage(url, heartbeat=False))
    assert "boom" in study.trials[0].user_attrs["traceback"]
    assert main(["worker", "f", "--storage", url, "--n-trials", "1"]) == 1
    cap = capsys.readouterr()
    assert "0 complete" in cap.out and "1 failed" in cap.out and "boom" in cap.err


SECRET = "S3cretPw"


def _password_urls():
    urls = [f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/test"]  # nothing listens
    if _pg_available():
        urls.append(f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/test")
    return urls


@pytest.mark.parametrize("url", _password_urls())
@pytest.mark.parametrize("verb", ["run-study", "worker", "studies", "best", "report final",
                                  "report memory", "report variables", "dashboard"])
def test_no_verb_prints_a_password(verb, url, small_site, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reachable = ":5432/" in url
    if verb == "dashboard" and reachable:
        pytest.skip("a reachable storage would start the server")
    argv = {
        "run-study": _cli_args(small_site, url, "--study-name", _unique("pw"), "--n-jobs", "0"),
        "worker": ["worker", "nosuch", "--storage", url],
        "studies": ["studies", "--storage", url],
        "best": ["best", "nosuch", "--storage", url],
        "report final": ["report", "final", "nosuch", "--storage", url],
        "report memory": ["report", "memory", "ann", "--data", str(small_site), "--params",
                          "nosuch", "--storage", url],
        "report variables": ["report", "variables", "nosuch", "--storage", url],
        "dashboard": ["dashboard", "--storage", url],
    }[verb]
    before = _snapshot(tmp_path)
    rc = main(argv)
    cap = capsys.readouterr()
    assert SECRET not in cap.out + cap.err
    if verb in ("studies", "run-study") and reachable:
        assert rc == 0 and "***" in cap.out
        return
    assert rc == 2, cap.err
    assert len(cap.err.strip().splitlines()) == 1 and cap.err.startswith("error: ")
    assert _snapshot(tmp_path) == before


def test_journal_urls_absolute_and_relative(tmp_path, monkeypatch):
    from dlfm_auto.study._storage import journal_path

    work_dir = tmp_path / "cwd"
    work_dir.mkdir()
    monkeypatch.chdir(work_dir)
    absolute = tmp_path / "abs" / "s.journal"
    assert journal_path(f"journal://{absolute}") == absolute  # journal:///tmp/... is absolute
    for url, where in ((f"journal://{absolute}", absolute),
                       ("journal://rel/s.journal", work_dir / "rel" / "s.journal"),
                       ("bare/s.journal", work_dir / "bare" / "s.journal")):
        optuna.create_study(storage=open_storage(url), study_name="j")
        assert where.is_file() and where.stat().st_size > 0
    assert not (work_dir / str(absolute).lstrip("/")).exists()


@pytest.mark.parametrize("family", ["ann", "rnn", "dynamic_ann", "xgboost", "random_forest",
                                    "lstm", "xlstm"])
def test_every_family_grid_runs(family, tmp_path, small_site):
    """1-point grids end to end (they failed in GridSampler); a point of the others."""
    from dlfm_auto.models import get_family

    url, name = f"sqlite:///{tmp_path}/g.db", f"{family}-grid"
    spec = build_spec(family, _prep(small_site, sequence_length=3), length_given=True,
                      sampler="grid", max_epochs=1, pruner="none")
    n = len(grid_points(spec))
    assert n == len(list(__import__("itertools").product(*get_family(family).grid().values())))
    create_or_resume(url, name, spec)
    one_point = n == 1
    ran = work(WorkerOptions(url, name, max_trials=None if one_point else 1))
    assert ran == 1 and _states(url, name) == {"COMPLETE": 1, **({} if one_point else
                                                                 {"WAITING": n - 1})}


def test_grid_cli_one_point(tmp_path, small_site, capsys):
    url = f"sqlite:///{tmp_path}/g1.db"
    assert main(_cli_args(small_site, url, "--sampler", "grid", "--sequence-length", "3")) == 0
    assert "1 complete" in capsys.readouterr().out


def test_two_processes_draw_distinct_trials(tmp_path, small_site):
    """Each process takes its own sampler stream: no identical trials from one seed."""
    url, name = f"sqlite:///{tmp_path}/d.db", "d"
    spec = build_spec("ann", _prep(small_site), length_given=True, n_trials=4, max_epochs=1,
                      pruner="none", sampler="random")
    create_or_resume(url, name, spec)
    assert work(WorkerOptions(url, name, max_trials=2)) == 2
    create_or_resume(url, name, spec)  # a second run-study of the same study
    assert work(WorkerOptions(url, name, max_trials=2)) == 2
    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
    assert len({json_key(t.params) for t in study.trials}) == 4


def json_key(params):
    import json

    return json.dumps(params, sort_keys=True)


def test_dead_local_owner_is_failed_and_its_whole_grid_point_rerun(tmp_path, small_site):
    """A grid trial killed after one draw: re-run with its whole point, no duplicate queued."""
    url, name = f"sqlite:///{tmp_path}/k.db", "k"
    spec = build_spec("dynamic_ann", _prep(small_site, sequence_length=3), length_given=True,
                      sampler="grid", max_epochs=1, pruner="none")
    study = create_or_resume(url, name, spec)
    trial = study.ask()  # claims the first queued point
    point = trial.system_attrs["fixed_params"] if hasattr(trial, "system_attrs") else None
    point = study._storage.get_trial(trial._trial_id).system_attrs["fixed_params"]
    trial.suggest_categorical("batch_size", [64])  # killed after drawing one value
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    study._storage.set_trial_user_attr(trial._trial_id, "pid", int(dead))  # its owner is gone
    study = create_or_resume(url, name, spec)  # the next run: fails it at once, re-queues
    ts = study.get_trials(deepcopy=False)
    assert ts[0].state == TrialState.FAIL and "died" in ts[0].user_attrs["error"]
    waiting = [t for t in ts if t.state == TrialState.WAITING]
    assert len(waiting) == 32  # 31 untouched points + the whole killed point, once
    assert sum(t.system_attrs["fixed_params"] == point for t in waiting) == 1
    retry = next(t for t in waiting if t.system_attrs.get("failed_trial") == 0)
    assert retry.system_attrs["fixed_params"] == point


def test_bad_inputs_one_line_exit_2_nothing_changed(tmp_path, small_site, capsys, monkeypatch):
    """Refusals in the study verbs: one line, exit 2, no file outside the output changed."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "ro.db"
    open_storage(f"sqlite:///{db}")
    db.chmod(0o444)
    ro_dir = tmp_path / "ro_dir"
    ro_dir.mkdir()
    ro_dir.chmod(0o555)
    junk = tmp_path / "junk.journal"
    junk.write_bytes(bytes(range(256)) * 8)
    const = tmp_path / "const.csv"
    frame = simple_site(days=4 * 365)
    frame["NEE"] = 1.5
    write_flux_csv(const, frame)
    url = f"sqlite:///{tmp_path}/ok.db"
    cases = [
        (_cli_args(small_site, "sqlite:///"), "in-memory"),
        (_cli_args(small_site, "sqlite:///:memory:"), "in-memory"),
        (_cli_args(small_site, f"sqlite:///{db}"), "read-only"),
        (_cli_args(small_site, f"sqlite:///{ro_dir}/s.db"), "read-only"),
        (_cli_args(small_site, f"journal://{junk}"), "not an Optuna journal"),
        (_cli_args(small_site, url, "--study-name", "x" * 300), "invalid study name"),
        (_cli_args(small_site, url, "--study-name", "../escape"), "invalid study name"),
        (_cli_args(const, url), "constant"),
        (_cli_args(small_site, url, "--pruner", "wilcoxon", "--folds", "5"), "only 3 fold"),
        (["best", "nosuch", "--storage", f"sqlite:///{db}"], "no study named"),
        (["worker", "nosuch", "--storage", f"sqlite:///{db}"], "read-only"),
    ]
    try:
        for argv, needle in cases:
            before = _snapshot(tmp_path)
            rc = main(argv)
            err = capsys.readouterr().err
            assert rc == 2, (argv, err)
            assert len(err.strip().splitlines()) == 1 and needle in err, (argv, err)
            assert _snapshot(tmp_path) == before, argv
    finally:
        ro_dir.chmod(0o755)
        db.chmod(0o644)


@pytest.mark.parametrize("argv, needle", [
    (["run-study", "ann", "--timeout", "-5"], "--timeout"[2:]),
    (["run-study", "ann", "--n-jobs", "-3"], "--n-jobs"),
    (["run-study", "ann", "--patience", "-1"], "--patience"),
    (["run-study", "ann", "--n-trials", "-1"], "--n-trials"),
    (["worker", "x", "--n-trials", "-2"], "--n-trials"),
    (["worker", "x", "--timeout", "0"], "timeout"),
])
def test_negative_counts_are_refused(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and needle in err[-1] and ("must be" in err[-1])


def test_best_hints_the_closest_name(tmp_path, small_site, capsys):
    url = f"sqlite:///{tmp_path}/h.db"
    create_or_resume(url, "lstm-US-UMB", build_spec("ann", _prep(small_site), length_given=True,
                                                    n_trials=1, max_epochs=1))
    assert main(["best", "lstm-US-UMX", "--storage", url]) == 2
    assert "closest: lstm-US-UMB" in capsys.readouterr().err


@needs_shared
def test_short_record_study_goes_on(tmp_path, capsys):
    """US-UMB 2010-2012 (one held-out year): the space is cut, the study runs, none fails."""
    import gzip

    short = tmp_path / "umb3.csv"
    with gzip.open(UMB, "rt") as src, open(short, "w") as dst:
        for i, line in enumerate(src):
            if i < 3 or line.startswith(("2010", "2011", "2012")):
                dst.write(line)
    url = f"sqlite:///{tmp_path}/s.db"
    # --window-gap-days 0: the DLFM window rule, under which the run died
    rc = main(["run-study", "lstm", "--data", str(short), "--n-trials", "4", "--max-epochs",
               "2", "--storage", url, "--quiet", "--study-name", "short",
               "--window-gap-days", "0"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out.count("search space cut") == 1 and "sequence_length 7, 14, 30, 60 " in cap.out
    states = _states(url, "short")
    assert states.get("FAIL", 0) == 0 and states.get("COMPLETE", 0) >= 3
    # no setting fits two folds of a 2-year record: refused up front, one line
    two = tmp_path / "umb2.csv"
    two.write_text("".join(ln for ln in short.read_text().splitlines(True)
                           if not ln.startswith("2010")))
    rc = main(["run-study", "lstm", "--data", str(two), "--storage", url, "--quiet",
               "--study-name", "two", "--eval-years", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_concurrent_creation_and_settings_are_atomic(tmp_path, small_site):
    """Processes creating one new SQLite study at once: no crash, one settings set wins.

    Each round: three `run-study --n-jobs 0` on a brand-new file at the same moment, two with
    the same columns and one with other columns. Before the lock, creation failed in 3 of 7
    rounds ("table studies already exists", alembic_version) and differing settings were both
    accepted.
    """
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for r in range(3):
        url = f"sqlite:///{tmp_path}/c{r}/s.db"
        cols = [["TA", "PPFD_IN"], ["TA", "PPFD_IN"], ["TA", "SW_IN"]]
        procs = [subprocess.Popen(
            [sys.executable, "-m", "dlfm_auto", "run-study", "ann", "--data", str(small_site),
             "--target", "NEE", "--columns", *c, "--eval-years", "1", "--folds", "2",
             "--n-jobs", "0", "--storage", url, "--study-name", "c", "--quiet"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for c in cols]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        for rc, err in results:
            assert rc in (0, 2) and "Traceback" not in err, err
            if rc == 2:
                assert "created with other data or settings" in err, err
        accepted = {tuple(c) for c, (rc, _) in zip(cols, results, strict=True) if rc == 0}
        assert len(accepted) == 1  # only one settings set was ever accepted
        stored = optuna.load_study(study_name="c", storage=open_storage(url, heartbeat=False)
                                   ).user_attrs["inputs"]
        assert tuple(stored) in accepted


def test_sqlite_hot_journal_after_kill_is_recovered(tmp_path, capsys):
    """A process killed mid-write leaves a hot journal: the next verb works (SQLite rolls back)."""
    import os
    import signal

    db = tmp_path / "hot.db"
    open_storage(f"sqlite:///{db}")
    writer = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3, time
c = sqlite3.connect({str(db)!r}, isolation_level=None)
c.execute('PRAGMA cache_size=1')
c.execute('BEGIN IMMEDIATE')
c.execute('CREATE TABLE junk(a)')
c.executemany('INSERT INTO junk VALUES (?)', [(i,) for i in range(20000)])
print('ready', flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert (tmp_path / "hot.db-journal").exists()
    assert main(["studies", "--storage", f"sqlite:///{db}"]) == 0
    assert "no studies" in capsys.readouterr().out
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert "junk" not in tables and "studies" in tables  # the half-done write was rolled back


def test_grid_point_killed_often_is_still_rerun_but_errors_give_up(tmp_path, small_site):
    """Kills never use up a point's retries; three trials failed with an error do."""
    url = f"sqlite:///{tmp_path}/r.db"
    spec = build_spec("ann", _prep(small_site, sequence_length=3), length_given=True,
                      sampler="grid", max_epochs=1, pruner="none")
    study = create_or_resume(url, "r", spec)
    for _ in range(4):  # killed four times: no traceback recorded
        trial = study.ask()
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study = create_or_resume(url, "r", spec)
        assert [t.state for t in study.trials].count(TrialState.WAITING) == 1
    for _ in range(3):  # an error each time
        trial = study.ask()
        study._storage.set_trial_user_attr(trial._trial_id, "traceback", "ValueError")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study = create_or_resume(url, "r", spec)
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 0


def test_trial_of_another_host_is_waited_for_then_rerun(tmp_path, small_site, monkeypatch,
                                                         capsys):
    """A RUNNING trial of another host: the run says it waits, re-runs it once it is stale."""
    monkeypatch.setenv("DLFM_AUTO_HEARTBEAT", "1")
    monkeypatch.setenv("DLFM_AUTO_GRACE", "2")
    url = f"sqlite:///{tmp_path}/o.db"
    spec = build_spec("ann", _prep(small_site, sequence_length=3), length_given=True,
                      sampler="grid", max_epochs=1, pruner="none")
    study = create_or_resume(url, "o", spec)
    trial = study.ask()  # the one grid point, "running elsewhere"
    study._storage.set_trial_user_attr(trial._trial_id, "host", "elsewhere")
    study._storage.record_heartbeat(trial._trial_id)
    res = work(WorkerOptions(url, "o", report_errors=True))
    err = capsys.readouterr().err
    assert "waiting for 1 running trial(s), some on other hosts (elsewhere)" in err
    assert res == 1 and res.complete == 1
    assert _states(url, "o") == {"FAIL": 1, "COMPLETE": 1}


@pytest.mark.parametrize("family", ["lstm", "ann"])
def test_the_objective_alone_picks_the_window_length(family, small_site):
    """L has one home: the objective. A fixed-length study's trials never draw it; a searched
    one draws it only from the family's choices, cut to what the data fill; feed "today"
    draws none."""
    from dlfm_auto.models import get_family
    from dlfm_auto.study._objective import Objective, pick_length
    from dlfm_auto.study._space import Space

    fam = get_family(family)
    sampler = optuna.samplers.RandomSampler(seed=0)
    fixed = build_spec(family, _prep(small_site, sequence_length=3), length_given=True,
                       sampler="random")
    obj = Objective(fixed)
    study = optuna.create_study(sampler=sampler)
    for _ in range(20):
        t = study.ask()
        params = obj.params(t)
        assert pick_length(obj._restricted(t), fixed, params) == 3  # 3 is no family choice
        assert "sequence_length" not in t.params and "sequence_length" not in params
        study.tell(t, 0.0)

    searched = build_spec(family, _prep(small_site), length_given=False, sampler="random")
    obj = Objective(searched)
    kept = list(fam.sequence_lengths[:2])  # as feasible_space cuts a short record
    obj.space = Space({"sequence_length": kept}, match_length=max(kept))
    study = optuna.create_study(sampler=sampler)
    seen, today = set(), 0
    for _ in range(30):
        t = study.ask()
        params = obj.params(t)
        L = pick_length(obj._restricted(t), searched, params)
        assert "sequence_length" not in params
        if fam.length_choices(params):
            assert L in kept and t.params["sequence_length"] == L
            seen.add(L)
        else:  # feed "today": no window, no drawn L
            assert params["feed"] == "today" and "sequence_length" not in t.params and L == 1
            today += 1
        study.tell(t, 0.0)
    assert seen == set(kept)
    assert today > 0 if not fam.sequence else today == 0

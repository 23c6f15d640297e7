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
from conftest import ROOT, simple_site, write_flux_csv
from optuna.trial import TrialState

from dlfm_auto import UserError
from dlfm_auto.cli import main
from dlfm_auto.data import PrepareConfig
from dlfm_auto.study import build_spec, create_or_resume, open_storage
from dlfm_auto.study._runner import WorkerOptions, grid_points, run_workers, work

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

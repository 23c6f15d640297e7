"""Compare, export, reproduce (issue 12): predictions, the ensemble, predict, leaderboard,
study files, the dashboard's objective name and settings note.

One tiny synthetic site (conftest ``simple_site``: NEE is a known function of today's
temperature and light) and tiny budgets keep these fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import simple_site, write_flux_csv

from dlfm_auto.cli import main
from dlfm_auto.data import PrepareConfig
from dlfm_auto.reports import Ensemble, load_ensemble
from dlfm_auto.reports._final import final_report
from dlfm_auto.reports._leaderboard import GRAPH_ID
from dlfm_auto.study import build_spec, create_or_resume, open_storage
from dlfm_auto.study._worker import WorkerOptions, work

COLUMNS = ("TA", "PPFD_IN", "SW_IN")
ANN = {"feed": "stats", "layer_size": 8, "optimizer": "adam", "lr": 0.01,
       "weight_decay": 1e-6, "batch_size": 64, "epochs": 200, "sequence_length": 7}  # capped at 8


def _load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A 5-year site, an ann study of one trial on it, and its final report (2 models)."""
    d = tmp_path_factory.mktemp("compare")
    data = write_flux_csv(d / "site.csv", simple_site(days=5 * 365))
    url = f"sqlite:///{d}/c.db"
    prep = PrepareConfig(data=str(data), columns=COLUMNS, sequence_length=7)
    spec = build_spec("ann", prep, length_given=True, n_trials=1, max_epochs=8, pruner="none")
    study = create_or_resume(url, "ann-site", spec)
    study.enqueue_trial({k: v for k, v in ANN.items() if k != "sequence_length"})
    work(WorkerOptions(url, "ann-site"))
    out = d / "reports"
    final_report(url, "ann-site", num_models=2, out_root=out)
    return {"dir": d, "data": data, "url": url, "out": out, "prep": prep}


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# -- report final: predictions.csv and the saved ensemble ---------------------------------

def test_final_report_writes_predictions_and_a_loadable_ensemble(site):
    dest = site["out"] / "ann-site" / "final"
    m = json.loads((dest / "metrics.json").read_text())
    pred = pd.read_csv(dest / "predictions.csv")
    assert list(pred.columns) == ["date", "split", "observed", "predicted", "predicted_sd",
                                  "climatology"]
    assert (pred["split"] == "eval").sum() == m["n_eval"]
    assert (pred["split"] == "train").sum() == m["n_train"]
    ev = pred[pred["split"] == "eval"]
    ens_row = next(r for r in m["rows"] if r["model"] == "ensemble mean" and r["split"] == "eval")
    sse = float(((ev["predicted"] - ev["observed"]) ** 2).sum())
    sst = float(((ev["observed"] - ev["observed"].mean()) ** 2).sum())
    assert 1 - sse / sst == pytest.approx(ens_row["r2"], abs=1e-4)  # the report's own ensemble
    assert (pred["predicted_sd"] > 0).any()  # two seeds differ
    # The saved ensemble, reloaded, predicts the study's own file as the report did.
    ens = load_ensemble("ann-site", site["out"])
    assert isinstance(ens, Ensemble) and len(ens.models) == 2 and ens.family == "ann"
    again = ens.predict_file(site["data"]).set_index("date")
    common = again.loc[ev["date"]]
    np.testing.assert_allclose(common["predicted"], ev["predicted"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(common["climatology"], ev["climatology"], rtol=1e-5, atol=1e-5)


def test_a_tree_ensemble_reloads_and_predicts_as_the_report(site):
    """Tree models travel as fitted objects: the reloaded forest predicts what the report did."""
    url, out = site["url"], site["out"]
    spec = build_spec("random_forest", site["prep"], length_given=True, n_trials=1,
                      max_epochs=20, pruner="none")
    study = create_or_resume(url, "rf-site", spec)
    study.enqueue_trial({"feed": "stats", "n_estimators": 100, "max_depth": 5,
                         "min_samples_leaf": 2, "max_features": 1.0})
    work(WorkerOptions(url, "rf-site"))
    final_report(url, "rf-site", num_models=1, out_root=out)
    pred = pd.read_csv(out / "rf-site" / "final" / "predictions.csv")
    ev = pred[pred["split"] == "eval"]
    assert (ev["predicted_sd"] == 0).all()  # one model: no spread
    ens = load_ensemble("rf-site", out)
    assert len(ens.models[0].estimator.estimators_) == 20  # capped like in CV
    again = ens.predict_file(site["data"]).set_index("date").loc[ev["date"]]
    np.testing.assert_allclose(again["predicted"], ev["predicted"], rtol=1e-5, atol=1e-5)


def test_predict_fills_gaps_and_days_without_nee(site, tmp_path, capsys):
    frame = simple_site(days=5 * 365)
    nee_gap = (frame.index >= "2012-06-01") & (frame.index < "2012-07-01")
    frame.loc[nee_gap, "NEE"] = np.nan  # a month without NEE: to be gap-filled
    long_gap = (frame.index >= "2013-03-01") & (frame.index < "2013-03-11")
    frame.loc[long_gap, "TA"] = np.nan  # 10 days without a driver: no complete window
    data = write_flux_csv(tmp_path / "gappy.csv", frame)
    out = tmp_path / "pred.csv"
    rc, text, err = _cli(["predict", "ann-site", "--data", str(data), "--out", str(out),
                          "--reports", str(site["out"])], capsys)
    assert rc == 0, err
    assert "gap-filled" in text
    p = pd.read_csv(out).set_index("date")
    june = p.loc["2012-06-01":"2012-06-30"]
    assert len(june) == 30 and june["observed"].isna().all()
    assert np.isfinite(june["predicted"]).all()
    # no prediction inside the long driver gap, nor for L-1 = 6 days after it
    days = pd.to_datetime(p.index)
    dead = (days >= "2013-03-01") & (days < "2013-03-17")
    assert not dead.any()
    assert "2013-03-17" in p.index
    # where NEE was observed, predictions are close to it (the site's answer is learnable)
    obs = p.dropna(subset=["observed"])
    r2 = 1 - ((obs.predicted - obs.observed) ** 2).sum() / ((obs.observed - obs.observed.mean())
                                                             ** 2).sum()
    assert r2 > 0.5


def test_predict_refuses_a_file_missing_a_driver(site, tmp_path, capsys):
    data = write_flux_csv(tmp_path / "nosw.csv", simple_site(days=60).drop(columns="SW_IN"))
    out = tmp_path / "p.csv"
    rc, _, err = _cli(["predict", "ann-site", "--data", str(data), "--out", str(out),
                       "--reports", str(site["out"])], capsys)
    assert rc == 2 and "SW_IN" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_predict_refuses_other_units(site, tmp_path, capsys):
    days = pd.date_range("2015-01-01", periods=100, freq="D")
    dd = pd.DataFrame({"TIMESTAMP": days.strftime("%Y%m%d"), "TA": 10.0, "PPFD_IN": 500.0,
                       "SW_IN": 240.0, "NEE": -1.0, "USTAR": 0.5})
    data = tmp_path / "dd.csv"
    dd.to_csv(data, index=False)
    rc, _, err = _cli(["predict", "ann-site", "--data", str(data), "--out",
                       str(tmp_path / "p.csv"), "--reports", str(site["out"])], capsys)
    assert rc == 2 and "gC m-2 d-1" in err and "µmol m-2 s-1" in err


def test_predict_refuses_a_driver_in_other_units(site, tmp_path, capsys):
    """A driver in other units (TA in K) is caught by the reader's plausibility ranges."""
    frame = simple_site(days=120)
    frame["TA"] = frame["TA"] + 273.15
    data = write_flux_csv(tmp_path / "kelvin.csv", frame)
    rc, _, err = _cli(["predict", "ann-site", "--data", str(data), "--out",
                       str(tmp_path / "p.csv"), "--reports", str(site["out"])], capsys)
    assert rc == 2 and "TA" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.csv").exists()


def test_predict_needs_a_final_report(site, tmp_path, capsys):
    rc, _, err = _cli(["predict", "ann-site", "--data", str(site["data"]), "--out",
                       str(tmp_path / "p.csv"), "--reports", str(tmp_path / "none")], capsys)
    assert rc == 2 and "report final ann-site` first" in err


def test_a_damaged_ensemble_file_is_one_line(site, tmp_path, capsys):
    import shutil

    reports = tmp_path / "r"
    shutil.copytree(site["out"] / "ann-site", reports / "ann-site")
    ens = reports / "ann-site" / "final" / "ensemble.pt"
    ens.write_bytes(ens.read_bytes()[:200])  # truncated
    rc, _, err = _cli(["predict", "ann-site", "--data", str(site["data"]), "--out",
                       str(tmp_path / "p.csv"), "--reports", str(reports)], capsys)
    assert rc == 2 and "cannot read the ensemble file" in err and len(err.splitlines()) == 1


def test_ensemble_predicts_a_daily_table(site):
    """The API on a daily table with no NEE column at all: every complete window."""
    from dlfm_auto.data import load_daily

    ens = load_ensemble("ann-site", site["out"])
    table, _, _ = load_daily(site["prep"])
    drivers = table[list(COLUMNS)].iloc[:40]
    p = ens.predict(drivers)
    assert len(p) == 40 - 6 and p["observed"].isna().all() and np.isfinite(p["predicted"]).all()


# -- report leaderboard ---------------------------------------------------------------------

def test_leaderboard(site, capsys):
    url, out = site["url"], site["out"]
    spec = build_spec("xgboost", site["prep"], length_given=True, n_trials=1, max_epochs=20,
                      pruner="none")
    create_or_resume(url, "xgb-site", spec)
    work(WorkerOptions(url, "xgb-site"))
    # a memory report's units of work are not a study row; another site is filtered out
    mem = optuna.create_study(storage=open_storage(url), study_name="mem-units")
    mem.set_user_attr("dlfm_auto.memory", {"lengths": [1]})
    rc, text, err = _cli(["report", "leaderboard", "--site", "XX-Tst", "--storage", url,
                          "--out", str(out)], capsys)
    assert rc == 0, err
    dest = out / "leaderboard-XX-Tst"
    for f in ("index.html", "report.md", "metrics.json", "leaderboard.png"):
        assert (dest / f).stat().st_size > 500, f
    m = json.loads((dest / "metrics.json").read_text())
    rows = {r["study"]: r for r in m["rows"] if r["kind"] == "study"}
    assert {"ann-site", "xgb-site"} <= set(rows) and "mem-units" not in rows
    for name, r in rows.items():
        s = _load(url, name)
        assert r["cv_r2"] == pytest.approx(s.best_value)
        assert r["trials"] == 1 and r["compute_s"] > 0
        assert r["skill_vs_climatology"] is not None and r["anomaly_r2"] is not None
        keys = s._storage.get_study_system_attrs(s._study_id)
        assert any(GRAPH_ID in k for k in keys)  # the figure, on the study's dashboard page
    assert [r["study"] for r in m["rows"][:len(rows)]] == sorted(rows,
                                                                 key=lambda n: -rows[n]["cv_r2"])
    final = json.loads((out / "ann-site" / "final" / "metrics.json").read_text())
    ens = next(r for r in final["rows"] if r["model"] == "ensemble mean" and r["split"] == "eval")
    assert rows["ann-site"]["heldout_r2"] == pytest.approx(ens["r2"])
    assert rows["xgb-site"]["heldout_r2"] is None  # no final report yet
    base = [r for r in m["rows"] if r["kind"] == "baseline"]
    assert {"climatology", "linear"} <= {b["family"] for b in base}
    for b in base:  # the baselines of the studies' own folds
        assert set(b["same_folds_as"]) <= set(rows) and b["cv_r2"] is not None
    assert "baseline: climatology" in (dest / "report.md").read_text()
    rc, _, err = _cli(["report", "leaderboard", "--site", "XX-Nope", "--storage", url,
                       "--out", str(out)], capsys)
    assert rc == 2 and "XX-Tst" in err  # the sites there are


# -- run-study --config ---------------------------------------------------------------------

def _toml(path: Path, data: Path, url: str, **extra: str) -> Path:
    lines = ['family = "ann"', f'data = "{data}"', 'columns = ["TA", "PPFD_IN", "SW_IN"]',
             "sequence_length = 7", "n_trials = 3", 'sampler = "random"', f'storage = "{url}"',
             *[f"{k} = {v}" for k, v in extra.items()]]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_study_file_options_and_override_order(site, tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/t.db"
    cfg = _toml(tmp_path / "s.toml", site["data"], url, study_name='"from-file"')
    rc, text, err = _cli(["run-study", "--config", str(cfg), "--n-jobs", "0"], capsys)
    assert rc == 0, err
    s = _load(url, "from-file")
    assert s.user_attrs["n_trials"] == 3 and s.user_attrs["dlfm_auto.spec"]["sampler"] == "random"
    assert s.user_attrs["dlfm_auto.config_file"]["text"] == cfg.read_text()
    # the command line wins over the file, also when it repeats an option's default (20)
    rc, _, err = _cli(["run-study", "--config", str(cfg), "--study-name", "cli-name",
                       "--n-trials", "20", "--n-jobs", "0"], capsys)
    assert rc == 0, err
    assert _load(url, "cli-name").user_attrs["n_trials"] == 20
    # the dashboard names the objective and shows the settings as the study's note ...
    s = _load(url, "cli-name")
    assert s.metric_names == ["CV R²"]
    note = _note(s)
    assert "## Study settings" in note and "family: **ann**" in note and "Study summary" not in note
    # ... and after a run, the settings first, then the skill summary
    rc, _, err = _cli(["run-study", "--config", str(cfg), "--study-name", "ran", "--n-trials",
                       "1", "--max-epochs", "2", "--quiet"], capsys)
    assert rc == 0, err
    note = _note(_load(url, "ran"))
    assert 0 <= note.index("## Study settings") < note.index("## Study summary")
    assert "baselines (CV R², same folds)" in note


def _note(study: optuna.Study) -> str:
    from optuna_dashboard._note import get_note_from_system_attrs

    attrs = study._storage.get_study_system_attrs(study._study_id)
    return get_note_from_system_attrs(attrs, None)["body"]


@pytest.mark.parametrize("line, words", [
    ("n_trial = 5", ["unknown key 'n_trial'", "n_trials"]),
    ("smapler = 'grid'", ["unknown key 'smapler'", "sampler"]),
    ("n_trials = '5'", ["'n_trials'", "an integer"]),
    ("columns = 'TA'", ["'columns'", "a list of strings"]),
    ("sampler = 'bayes'", ["'sampler'", "one of", "'tpe'"]),
    ("doy = 1", ["'doy'", "true or false"]),
    ("n_trials = -1", ["'n_trials'", ">= 0"]),
    ("n_trials = [", ["not valid TOML"]),
])
def test_study_file_errors_name_the_key(site, tmp_path, capsys, line, words):
    url = f"sqlite:///{tmp_path}/e.db"
    cfg = _toml(tmp_path / "bad.toml", site["data"], url)
    key = line.split("=")[0].strip()
    kept = [x for x in cfg.read_text().splitlines() if x.split("=")[0].strip() != key]
    cfg.write_text("\n".join([*kept, line]) + "\n")
    rc, _, err = _cli(["run-study", "--config", str(cfg), "--n-jobs", "0"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err
    assert not (tmp_path / "e.db").exists()  # nothing created


def test_example_study_files_are_valid():
    """Every studies/*.toml in the repo parses against run-study's own options."""
    from dlfm_auto.cli import build_parser
    from dlfm_auto.study._config_file import _RULES_KEY, read_study_file

    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    rules = sub.choices["run-study"]._defaults[_RULES_KEY]
    files = sorted((Path(__file__).resolve().parents[1] / "studies").glob("*.toml"))
    assert {f.name for f in files} >= {"demo.toml", "template-ameriflux.toml"}
    for f in files:
        opts, _ = read_study_file(f, rules)
        assert opts["family"] and opts["data"]


def test_password_in_a_study_file_is_masked():
    from dlfm_auto._urls import mask_secrets as mask_passwords

    text = 'storage = "postgresql+psycopg://me:s3cret@db/x"\n'
    assert "s3cret" not in mask_passwords(text) and "me:***@db" in mask_passwords(text)


def test_a_diverged_trial_fails_and_the_study_goes_on(site, tmp_path, monkeypatch):
    """A NaN CV R² (a diverged model) marks that trial FAIL; the next trials still run."""
    import dataclasses

    import dlfm_auto.study._objective as objective

    real = objective.train_many
    calls = []

    def first_diverges(*a, **kw):  # the first trial's first fold returns NaN
        res = real(*a, **kw)
        calls.append(1)
        if len(calls) == 1:
            res = [dataclasses.replace(res[0], r2=float("nan")), *res[1:]]
        return res

    monkeypatch.setattr(objective, "train_many", first_diverges)
    url = f"sqlite:///{tmp_path}/d.db"
    spec = build_spec("ann", site["prep"], length_given=True, n_trials=2, max_epochs=2,
                      pruner="none", sampler="random")
    create_or_resume(url, "div", spec)
    work(WorkerOptions(url, "div"))
    states = [t.state.name for t in _load(url, "div").trials]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"]


def test_reports_rebuild_derived_model_parameters(site):
    """dynamic_ann's trials hold n_layers/units_i; its model takes layer_dims (the final
    report of a TPE dynamic_ann study failed: "layer_dims must name at least one layer")."""
    from dlfm_auto.study._objective import model_params

    spec = build_spec("dynamic_ann", site["prep"], length_given=True, n_trials=1)
    trial = {"feed": "flatten", "n_layers": 2, "units_0": 47, "units_1": 58,
             "activation": "tanh", "dropout": 0.1, "optimizer": "adamw", "lr": 0.01,
             "weight_decay": 1e-5, "batch_size": 64, "epochs": 400}
    p = model_params(spec, trial)
    assert p["layer_dims"] == "47-58" and "units_0" not in p and "sequence_length" not in p
    import torch

    from dlfm_auto.models import get_family

    net = get_family("dynamic_ann").build(p, 3, 7)
    assert sum(isinstance(m, torch.nn.Linear) for m in net.modules()) == 3  # 47, 58, head

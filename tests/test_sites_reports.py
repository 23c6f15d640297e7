"""Reports on a multi-site study (issue 15): the per-site final report, the memory atlas,
``prepare`` per site, and that predict, variables and the leaderboard work on such a study.

Real sites (US-UMB, US-MMS; skipped without the shared data), two of them, three drivers,
one short XGBoost trial: each test takes seconds.
"""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import DATA, MMS, UMB, needs_shared

from dlfm_auto import UserError
from dlfm_auto.data import PrepareConfig
from dlfm_auto.training import r2_mse

pytestmark = needs_shared

SITES = ("US-UMB", "US-MMS")
NR1 = DATA / "oneflux" / "US-NR1_NEE_met.csv.gz"
COLUMNS = ("TA", "PPFD_IN", "SW_IN")
NAME = "xgboost-2sites-loso"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from dlfm_auto.study import build_spec, create_or_resume
    from dlfm_auto.study._worker import WorkerOptions, work

    d = tmp_path_factory.mktemp("sites_reports")
    url = f"sqlite:///{d}/s.db"
    prep = PrepareConfig(data=(str(UMB), str(MMS)), columns=COLUMNS, cv="sites",
                         sequence_length=3)
    spec = build_spec("xgboost", prep, length_given=True, n_trials=1, max_epochs=30,
                      pruner="none")
    create_or_resume(url, NAME, spec)
    work(WorkerOptions(url, NAME, max_trials=1))
    return {"dir": d, "url": url, "prep": prep}


def test_final_report_has_a_per_site_table(study):
    from dlfm_auto.data import prepare
    from dlfm_auto.reports._final import PREDICTIONS_FILE, final_report
    from dlfm_auto.study import open_storage
    from dlfm_auto.training import baselines

    out = study["dir"] / "out"
    dest = final_report(study["url"], NAME, num_models=1, out_root=out)
    m = json.loads((dest / "metrics.json").read_text())
    assert m["sites"] == list(SITES) and m["cv_mode"] == "sites"
    rows = {r["site"]: r for r in m["per_site"]}
    assert list(rows) == list(SITES)
    assert sum(r["n"] for r in rows.values()) == m["n_eval"]
    best = optuna.load_study(study_name=NAME, storage=open_storage(study["url"])).best_trial
    ds = prepare(study["prep"])
    cv_sites = baselines.dataset_baselines(ds)["cv_sites"]
    pred = pd.read_csv(dest / PREDICTIONS_FILE)
    for site, r in rows.items():
        # CV: the best trial's R² of the site held out, beside the baselines on the same folds
        assert r["cv_model_r2"] == pytest.approx(best.user_attrs["site_r2"][site])
        assert r["cv_climatology_r2"] == pytest.approx(cv_sites["climatology"][site]["r2"])
        assert r["cv_linear_r2"] == pytest.approx(cv_sites["linear"][site]["r2"])
        # held out: the site's own last years, scored from the exported predictions again
        ev = pred[(pred["site"] == site) & (pred["split"] == "eval")]
        years = sorted({int(d[:4]) for d in ev["date"]})
        assert r["heldout_years"] == ", ".join(map(str, ds.site_eval_years[site]))
        assert set(years) <= set(ds.site_eval_years[site]) and len(ev) == r["n"]
        assert r["model_r2"] == pytest.approx(r2_mse(ev["observed"], ev["predicted"])[0],
                                              abs=1e-5)
        # the climatology baseline is the mean seasonal cycle of all sites' training years
        assert r["climatology_r2"] == pytest.approx(
            r2_mse(ev["observed"], ev["climatology"])[0], abs=1e-5)
        assert np.isfinite(r["linear_r2"])
    assert m["median_site_r2"] == pytest.approx(best.user_attrs["median_site_r2"])
    md = (dest / "report.md").read_text()
    assert "## Per site beside the baselines" in md and "| US-MMS |" in md
    assert "Per site beside the baselines" in (dest / "index.html").read_text()
    assert (dest / "per_site.png").stat().st_size > 5000
    # the pooled per-year table is still there
    assert m["per_year"] and all(y["n"] > 0 for y in m["per_year"])


def test_predict_a_file_of_one_site(study):
    """A multi-site ensemble of plain drivers predicts a file of one of its sites: on that
    site's held-out days exactly the final report's predictions."""
    from dlfm_auto.reports import load_ensemble
    from dlfm_auto.reports._final import PREDICTIONS_FILE, final_report

    out = study["dir"] / "out_predict"
    dest = final_report(study["url"], NAME, num_models=1, out_root=out)
    ens = load_ensemble(NAME, out)
    assert ens.meta["sites"] == list(SITES)
    frame = ens.predict_file(MMS).set_index("date")
    ev = pd.read_csv(dest / PREDICTIONS_FILE)
    ev = ev[(ev["site"] == "US-MMS") & (ev["split"] == "eval")].set_index("date")
    assert len(ev) > 300
    assert np.allclose(frame.loc[ev.index, "predicted"], ev["predicted"], atol=1e-4)
    assert not ens.sites  # plain drivers: nothing depends on the site


def test_predict_with_static_features_and_site_norm(tmp_path):
    """With --site-info and --site-norm the ensemble stores each site's static features and
    driver statistics: a file of one of its sites gets the final report's predictions; a
    file of another site is refused in one line."""
    from dlfm_auto.reports import load_ensemble
    from dlfm_auto.reports._final import PREDICTIONS_FILE, final_report
    from dlfm_auto.study import build_spec, create_or_resume
    from dlfm_auto.study._worker import WorkerOptions, work

    info = tmp_path / "sites.csv"
    info.write_text("site,IGBP,lat\nUS-UMB,DBF,45.56\nUS-MMS,DBF,39.32\nUS-NR1,ENF,40.03\n")
    url = f"sqlite:///{tmp_path}/s.db"
    prep = PrepareConfig(data=(str(UMB), str(MMS)), columns=COLUMNS, cv="sites",
                         sequence_length=3, site_info=str(info), site_norm=True)
    spec = build_spec("xgboost", prep, length_given=True, n_trials=1, max_epochs=30,
                      pruner="none")
    create_or_resume(url, "xgb-static", spec)
    work(WorkerOptions(url, "xgb-static", max_trials=1))
    dest = final_report(url, "xgb-static", num_models=1, out_root=tmp_path / "out")
    ens = load_ensemble("xgb-static", tmp_path / "out")
    assert set(ens.sites) == set(SITES)
    assert ens.sites["US-UMB"]["static"] == pytest.approx([1.0, 45.56])  # IGBP=DBF, lat
    assert ens.sites["US-UMB"]["mean"] != ens.sites["US-MMS"]["mean"]
    ev = pd.read_csv(dest / PREDICTIONS_FILE)
    for site, path in zip(SITES, (UMB, MMS), strict=True):
        frame = ens.predict_file(path).set_index("date")
        mine = ev[(ev["site"] == site) & (ev["split"] == "eval")].set_index("date")
        assert len(mine) > 300
        assert np.allclose(frame.loc[mine.index, "predicted"], mine["predicted"], atol=1e-4)
    with pytest.raises(UserError, match="predicts only for its own sites"):
        ens.predict_file(NR1)


def test_memory_atlas_one_curve_per_site_and_resumes(study, monkeypatch):
    import dataclasses

    from dlfm_auto.reports._memory import memory_report
    from dlfm_auto.study import _processes, open_storage

    out = study["dir"] / "mem"
    kw = dict(lengths=(1, 3), num_models=1, max_epochs=20, out_root=out, study_name=NAME)
    # an interrupted report: its worker stops after one of the two units
    real = _processes.run_workers
    with monkeypatch.context() as mp:
        mp.setattr(_processes, "run_workers", lambda opts, *a, **k: real(
            dataclasses.replace(opts, max_trials=1), *a, **k))
        with pytest.raises(UserError, match="1 memory units did not finish"):
            memory_report(study["url"], None, None, **kw)
    storage = open_storage(study["url"])
    name = next(s.study_name for s in optuna.get_all_study_summaries(storage)
                if s.study_name.startswith("memory-xgboost-US-UMB+US-MMS-"))
    first = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert len(first) == 2 and first[0].state == optuna.trial.TrialState.COMPLETE
    # the same command continues: only the missing unit runs
    dest = memory_report(study["url"], None, None, **kw)
    m = json.loads((dest / "metrics.json").read_text())
    assert m["study"] == name
    units = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert len(units) == 2 and units[0].datetime_complete == first[0].datetime_complete
    assert m["sites"] == list(SITES) and m["folds"] == [f"site={s}" for s in SITES]
    got = {(r["site"], r["sequence_length"], r["split"]) for r in m["site_rows"]}
    assert got == {(s, L, p) for s in SITES for L in (1, 3) for p in ("cv", "eval")}
    assert {(r["sequence_length"], r["split"]) for r in m["rows"]} == {
        (L, p) for L in (1, 3) for p in ("cv", "eval")}
    for r in m["site_rows"]:
        assert r["r2_ci_low"] <= r["r2_mean"] <= r["r2_ci_high"]
        # one seed: the site's point is its R² over its pooled days (training.group_scores)
        unit = next(t for t in units if t.params["sequence_length"] == r["sequence_length"])
        want = unit.user_attrs[f"{r['split']}_site_scores"][r["site"]]
        assert r["r2_mean"] == pytest.approx(want["r2"]) and r["n_samples"] == want["n"]
        assert r["r2_ci_high"] > r["r2_ci_low"]  # the site's years are resampled
    # cv=sites: the pooled curve is the mean over the folds (sites), as the study's CV R²
    for L in (1, 3):
        pooled = next(r for r in m["rows"] if r["sequence_length"] == L and r["split"] == "cv")
        per = [r["r2_mean"] for r in m["site_rows"]
               if r["sequence_length"] == L and r["split"] == "cv"]
        assert pooled["r2_mean"] == pytest.approx(np.mean(per))
    assert (dest / "memory_atlas.png").stat().st_size > 5000
    assert "## Per site" in (dest / "report.md").read_text()
    # a finished report run again trains nothing
    done = {t.number: t.datetime_complete for t in units}
    memory_report(study["url"], None, None, **kw)
    again = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert {t.number: t.datetime_complete for t in again} == done


def test_prepare_prints_each_site_then_the_pooled_folds(capsys):
    from dlfm_auto.cli import main

    rc = main(["prepare", "--data", str(UMB), str(MMS), "--columns", *COLUMNS, "--cv", "sites"])
    text = capsys.readouterr().out
    assert rc == 0
    for site, path in zip(SITES, (UMB, MMS), strict=True):
        block = text.split(f"== site {site}\n", 1)[1]
        assert block.startswith(f"file: {path}")
        assert "target: NEE" in block and "inputs: TA, PPFD_IN, SW_IN" in block
        assert "days in table:" in block
        assert f"{site}: " in text and "held-out evaluation years: " in text
    assert text.index("== site US-UMB") < text.index("== site US-MMS") < text.index("== pooled")
    assert "folds (sites: leave one site out): 2: site=US-UMB (" in text
    held = [ln for ln in text.splitlines() if "held-out evaluation years" in ln]
    assert len(held) == 2 and all(ln.split(": ")[-1][:2] == "20" for ln in held)


def test_variables_and_leaderboard_run_on_a_multi_site_study(study):
    from dlfm_auto.reports._leaderboard import leaderboard_report
    from dlfm_auto.reports._variables import variables_report

    out = study["dir"] / "out_other"
    dest = variables_report(study["url"], NAME, lags="0,1", out_root=out)
    assert (dest / "metrics.json").exists()
    lb = leaderboard_report(study["url"], out_root=out)
    row = next(r for r in json.loads((lb / "metrics.json").read_text())["rows"]
               if r["study"] == NAME)
    assert row["site"] == "US-UMB+US-MMS" and np.isfinite(row["cv_r2"])

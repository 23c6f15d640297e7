"""Reports on the synthetic demo site, whose answers are known (memory planted via rain)."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from dlfm_auto import UserError
from dlfm_auto.data import PrepareConfig, write_demo_site
from dlfm_auto.reports._final import final_report
from dlfm_auto.reports._memory import memory_report
from dlfm_auto.reports._variables import variables_report
from dlfm_auto.study import build_spec, create_or_resume, open_storage
from dlfm_auto.study._worker import WorkerOptions, work

# Two layers: over 3 seeds x (numba kernel, oneDNN), every 2-layer model put light and
# temperature at lag 0, while one 1-layer model of six put its largest gradients 22-29 days
# back (a poorly trained fold model, not the data's answer).
GOOD_LSTM = {"hidden_size": 16, "num_layers": 2, "dropout": 0.0, "optimizer": "adam",
             "lr": 0.01, "weight_decay": 1e-6, "batch_size": 64, "epochs": 300}  # capped at 40


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("reports")
    data = write_demo_site(d / "demo.csv", years=6, seed=0)
    url = f"sqlite:///{d}/r.db"
    prep = PrepareConfig(data=str(data), sequence_length=30, columns=("TA", "PPFD_IN", "P"))
    spec = build_spec("lstm", prep, length_given=True, n_trials=1, max_epochs=40, pruner="none")
    study = create_or_resume(url, "lstm-demo", spec)
    study.enqueue_trial({**GOOD_LSTM, "sequence_length": 30})
    work(WorkerOptions(url, "lstm-demo"))
    return {"dir": d, "data": data, "url": url, "prep": prep}


def test_final_report(demo):
    out = demo["dir"] / "out"
    dest = final_report(demo["url"], "lstm-demo", num_models=2, out_root=out)
    assert dest == out / "lstm-demo" / "final"  # reports/<study>/final/, linked from ../index.html
    assert "final/index.html" in (out / "lstm-demo" / "index.html").read_text()
    for f in ("index.html", "report.md", "metrics.json", "timeseries.png", "scatter.png",
              "learning_curves.png"):
        assert (dest / f).stat().st_size > 500, f
    m = json.loads((dest / "metrics.json").read_text())
    ens = {r["split"]: r for r in m["rows"] if r["model"] == "ensemble mean"}
    assert set(ens) == {"train", "eval"}
    for key in ("r2", "mse", "rmse", "bias", "nse"):
        assert np.isfinite(ens["eval"][key])
    assert ens["eval"]["r2"] > 0.5 and m["eval_years"] == [2018, 2019, 2020]
    assert m["cv_r2"] == pytest.approx(optuna.load_study(
        study_name="lstm-demo", storage=open_storage(demo["url"])).best_value)
    # the main figure and a summary note are attached to the study for optuna-dashboard
    study = optuna.load_study(study_name="lstm-demo", storage=open_storage(demo["url"]))
    keys = list(study._storage.get_study_system_attrs(study._study_id))
    assert any(k.startswith("dashboard:note_str") for k in keys)
    assert any(k.startswith("dashboard:plot_data") for k in keys)
    html = (dest / "index.html").read_text()
    assert "plotly" in html.lower() and '<script src="http' not in html  # self-contained
    # re-running replaces the report atomically: no stale files, no temp folders left
    (dest / "stale.txt").write_text("x")
    final_report(demo["url"], "lstm-demo", num_models=1, out_root=out)
    assert not (dest / "stale.txt").exists()
    assert [p.name for p in out.iterdir()] == ["lstm-demo"]


def test_memory_report_finds_the_planted_memory(demo):
    out = demo["dir"] / "mem"
    # 3 models: the held-out R² of last-epoch Adam models moves by ~0.05 with float noise
    # (2 models passed the +0.1 margin below by 0.15 on one float path, 0.09 on another)
    kw = dict(lengths=(1, 30), num_models=3, out_root=out, max_epochs=40,
              params_source=",".join(f"{k}={v}" for k, v in GOOD_LSTM.items()))
    dest = memory_report(demo["url"], "lstm", demo["prep"], **kw)
    m = json.loads((dest / "metrics.json").read_text())
    r2 = {(r["sequence_length"], r["split"]): r for r in m["rows"]}
    for r in m["rows"]:
        assert {"sequence_length", "split", "r2_mean", "r2_ci_low", "r2_ci_high", "mse_mean",
                "anom_r2_mean", "anom_r2_ci_low", "n_models"} <= set(r) and r["n_models"] == 3
        assert r["r2_ci_low"] <= r["r2_mean"] <= r["r2_ci_high"]
    assert {s for _, s in r2} == {"cv", "eval"}  # the curve on CV folds, held-out beside
    assert r2[(30, "cv")]["r2_mean"] > r2[(1, "cv")]["r2_mean"] + 0.1
    assert r2[(30, "cv")]["anom_r2_mean"] > r2[(1, "cv")]["anom_r2_mean"] + 0.1
    assert r2[(30, "eval")]["r2_mean"] > r2[(1, "eval")]["r2_mean"] + 0.1
    for part in ("cv", "eval"):  # matched days: every L on the same target days and years
        assert r2[(1, part)]["n_samples"] == r2[(30, part)]["n_samples"]
        assert r2[(1, part)]["years"] == r2[(30, part)]["years"]
    assert sum(m["days_per_month"]["heldout"].values()) == r2[(1, "eval")]["n_samples"]
    assert set(m["baselines"]["cv"]) >= {"climatology", "linear"}
    # the units are stored: a second run trains nothing and gives the same rows
    study = optuna.load_study(study_name=m["study"], storage=open_storage(demo["url"]))
    n_before = len(study.trials)
    dest2 = memory_report(demo["url"], "lstm", demo["prep"], **kw)
    assert len(study.trials) == n_before
    assert json.loads((dest2 / "metrics.json").read_text())["rows"] == m["rows"]


def test_variables_report_rain_matters_at_long_lags(demo):
    dest = variables_report(demo["url"], "lstm-demo", out_root=demo["dir"] / "var")
    m = json.loads((dest / "metrics.json").read_text())
    assert (dest / "heatmap.png").exists() and m["measure"] == "grad_mean_abs"

    def share(driver, lags):
        rows = [r for r in m["rows"] if r["driver"] == driver]
        return sum(r["grad_var"] for r in rows if lags(r["lag"])) / sum(r["grad_var"] for r in rows)

    def peak_lag(driver):
        rows = [r for r in m["rows"] if r["driver"] == driver]
        return max(rows, key=lambda r: r["grad_var"])["lag"]

    assert share("P", lambda g: g >= 3) > 0.4  # the store integrates a month of rain
    for driver in ("PPFD_IN", "TA"):  # light and temperature act today
        assert peak_lag(driver) == 0
        assert share(driver, lambda g: g == 0) > 0.1  # vs 1/30 if spread evenly


def test_report_errors(demo, tmp_path):
    url = f"sqlite:///{tmp_path}/e.db"
    data = write_demo_site(tmp_path / "d.csv", years=5, seed=1)
    prep = PrepareConfig(data=str(data))
    create_or_resume(url, "empty", build_spec("ann", prep, length_given=True, n_trials=1))
    with pytest.raises(UserError, match="no complete trial"):
        final_report(url, "empty", out_root=tmp_path / "o")
    with pytest.raises(UserError, match="closest"):
        final_report(url, "empyt", out_root=tmp_path / "o")
    data.write_text(data.read_text().replace("0.5", "0.6", 1))  # changed file
    with pytest.raises(UserError, match="changed"):
        final_report(url, "empty", out_root=tmp_path / "o")
    data.unlink()
    with pytest.raises(UserError, match="no longer exists"):
        final_report(url, "empty", out_root=tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_variables_report_for_a_tree_model_uses_permutation_importance(demo):
    url = demo["url"]
    prep = demo["prep"].replace(sequence_length=14)
    spec = build_spec("random_forest", prep, length_given=True, n_trials=1, max_epochs=60,
                      pruner="none")
    study = create_or_resume(url, "rf-demo", spec)
    study.enqueue_trial({"feed": "flatten", "n_estimators": 100, "max_depth": 10,
                         "min_samples_leaf": 2, "max_features": 1.0})
    work(WorkerOptions(url, "rf-demo"))
    dest = variables_report(url, "rf-demo", out_root=demo["dir"] / "var", lags="0..13")
    m = json.loads((dest / "metrics.json").read_text())
    assert m["measure"] == "perm_mse_rise" and len(m["rows"]) == 14 * 3

    def total(driver, lags):
        return sum(r["perm_mse_rise"] for r in m["rows"] if r["driver"] == driver and lags(r["lag"]))

    assert total("PPFD_IN", lambda g: g == 0) > 0.1  # shuffling today's light hurts
    assert total("P", lambda g: g >= 1) > total("P", lambda g: g == 0)  # rain acts with delay


def test_variables_rank_a_strong_linear_driver_first():
    """3·x0 + 0.2·x1²: constant gradient (variance 0) for x0, yet it matters most."""
    import torch

    from dlfm_auto.reports._variables import ranking_measure, torch_sensitivity

    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))  # the sensitivity code needs a device

        def forward(self, x):
            return 3 * x[:, -1, 0] + 0.2 * x[:, -1, 1] ** 2 + self.w

    X = np.random.default_rng(0).normal(size=(2000, 1, 2)).astype(np.float32)
    m = torch_sensitivity(F(), X)
    key = ranking_measure(m)
    assert m[key][0, 0] > m[key][0, 1] and m["ig_mean_abs"][0, 0] > m["ig_mean_abs"][0, 1]
    assert m["grad_var"][0, 0] < m["grad_var"][0, 1]  # what DLFM's measure would have ranked


def test_learning_curve_panels_keep_epoch_off_the_series():
    from dlfm_auto.reports._final import curve_panels

    x, (loss, r2) = curve_panels({"epoch": [0, 2, 4], "train_loss": [3, 2, 1],
                                  "val_r2": [0.1, 0.2, 0.3], "inner_r2": [0.1, 0.3, 0.2]})
    assert x == [0, 2, 4] and set(loss) == {"train_loss"} and set(r2) == {"val_r2", "inner_r2"}
    x, (loss, r2) = curve_panels({"val_r2": [0.5, 0.6]})  # XGBoost: rounds, no epoch key
    assert x == [0, 1] and not loss


def test_final_random_forest_keeps_its_trees(demo):
    from dlfm_auto.reports._final import final_budget, train_final_models
    from dlfm_auto.reports._load import study_context

    url = demo["url"]
    prep = demo["prep"].replace(sequence_length=7)
    spec = build_spec("random_forest", prep, length_given=True, n_trials=1, pruner="none")
    study = create_or_resume(url, "rf-trees", spec)
    study.enqueue_trial({"feed": "stats", "n_estimators": 100, "max_depth": 5,
                         "min_samples_leaf": 2, "max_features": 1.0})
    work(WorkerOptions(url, "rf-trees"))
    ctx = study_context(url, "rf-trees")
    assert set(ctx.best.user_attrs["best_epochs"]) == {0} and final_budget(ctx) is None
    _, results = train_final_models(ctx, 1)
    assert len(results[0].model.estimator.estimators_) == 100


def test_memory_intervals_hold_sampling_not_only_seed_spread():
    from dlfm_auto.reports._memory import bootstrap_ci

    same_seeds = [[0.5, 0.7, 0.9], [0.5, 0.7, 0.9]]  # no seed spread, years differ
    m, lo, hi = bootstrap_ci(same_seeds)
    assert m == pytest.approx(0.7) and lo < 0.65 and hi > 0.75
    assert bootstrap_ci(same_seeds) == (m, lo, hi)  # seeded: a re-run gives the same rows
    m, lo, hi = bootstrap_ci([[0.7, 0.7, 0.7]])
    assert lo == hi == pytest.approx(0.7)

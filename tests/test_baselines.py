"""Baselines (issue 10 item 2): climatology, linear, persistence; anomaly R²; old studies."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dlfm_auto.data import Normalizer, Split
from dlfm_auto.training import baselines, r2_mse


def seasonal_split(seed: int = 0, lag: bool = False) -> tuple[Split, np.ndarray]:
    """y = 3 sin(2π doy/365) + x + e, x and e independent N(0, 1); train 2001-2008, val 2009.

    Variance shares: season 4.5, x 1, e 1 (total 6.5), so climatology explains 4.5/6.5, the
    linear model on x 1/6.5, and a model predicting climatology + x has anomaly R² 1/2.
    """
    rng = np.random.default_rng(seed)
    days = np.arange(np.datetime64("2001-01-01"), np.datetime64("2010-01-01"))
    doy = baselines.day_of_year(days)
    x = rng.normal(size=len(days))
    y = 3 * np.sin(2 * np.pi * doy / 365) + x + rng.normal(size=len(days))
    cols = [x]
    names = ["x"]
    if lag:
        cols.append(np.r_[np.nan, y[:-1]])
        names.append("NEE_lag1")
    X = np.stack(cols, axis=1)[:, None, :].astype(np.float32)
    X[0, 0, -1] = 0.0
    va = days >= np.datetime64("2009-01-01")
    norm = Normalizer(np.zeros(len(names)), np.ones(len(names)), tuple(names))
    split = Split("val=2009", X[~va], y[~va].astype(np.float32), X[va], y[va].astype(np.float32),
                  norm, (2009,), days[~va], days[va])
    return split, x[va]


def test_climatology_explains_the_known_share():
    r2c, r2l, anom = [], [], []
    for seed in range(5):
        split, x_val = seasonal_split(seed)
        s = baselines.split_scores(split)
        r2c.append(s["baselines"]["climatology"]["r2"])
        r2l.append(s["baselines"]["linear"]["r2"])
        clim = baselines.predictions(split)["climatology"]
        r2, mse = r2_mse(split.y_val, clim + x_val)  # the model: climatology + the driver
        anom.append(baselines.anomaly_r2(mse, len(split.y_val), s["anom_sst"]))
        assert r2 > r2c[-1]
    assert np.mean(r2c) == pytest.approx(4.5 / 6.5, abs=0.03)
    assert np.mean(r2l) == pytest.approx(1 / 6.5, abs=0.03)
    assert np.mean(anom) == pytest.approx(0.5, abs=0.05)
    assert "persistence" not in baselines.predictions(split)


def test_climatology_is_circular_and_fills_empty_days():
    days = np.arange(np.datetime64("2001-01-01"), np.datetime64("2001-01-11"))  # Jan 1-10
    clim = baselines.climatology(days, np.ones(10) * 2.0)
    assert clim.shape == (366,)
    assert clim[0] == 2.0 and clim[-5] == 2.0  # late December sees early January
    assert clim[180] == 2.0  # no data within 15 days: the overall mean


def test_persistence_only_when_lagged_nee_is_fed():
    split, _ = seasonal_split(lag=True)
    preds = baselines.predictions(split)
    assert np.allclose(preds["persistence"][1:], split.y_val[:-1], atol=1e-4)
    # the linear baseline is on today's drivers: NEE_lag1 is not one of them
    assert baselines.driver_columns(("x", "NEE_lag1", "DOY", "TA_mean30d")) == [0]


def test_skill_summary_on_an_old_trial_without_anomaly_stats(monkeypatch):
    from dlfm_auto.study import _objective

    fake = {"cv": {"climatology": {"cv_r2": 0.8, "cv_mse": 2.0},
                   "linear": {"cv_r2": 0.5, "cv_mse": 5.0}}, "heldout": None}
    monkeypatch.setattr(_objective, "study_baselines", lambda spec, trial: fake)
    spec = SimpleNamespace(prep=SimpleNamespace(sequence_length=1))
    old = SimpleNamespace(user_attrs={"cv_mse": 1.0, "fold_mse": [1.0], "n_val": [100]})
    out = _objective.skill_summary(spec, old)
    assert out["skill_vs_climatology"] == pytest.approx(0.5) and out["anomaly_r2"] is None
    new = SimpleNamespace(user_attrs={**old.user_attrs, "fold_anom_sst": [400.0]})
    assert _objective.skill_summary(spec, new)["anomaly_r2"] == pytest.approx(0.75)

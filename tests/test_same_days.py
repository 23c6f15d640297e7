"""Issue 10 item 4: the same target days for CV, final and memory reports; gap-filled windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import UMB, needs_shared, simple_site, write_flux_csv

from dlfm_auto.data import PrepareConfig, prepare
from dlfm_auto.study import build_spec
from dlfm_auto.study._objective import trial_prep


@pytest.fixture(scope="module")
def gappy(tmp_path_factory):
    df = simple_site(days=5 * 365)
    day = df.index.floor("D")
    u = day.unique()
    df.loc[day.isin(u[10::40]) | day.isin(u[11::40]), "TA"] = np.nan  # 2-day gaps every 40 days
    df.loc[day.isin(u[200:206]), "TA"] = np.nan  # one 6-day gap
    df.loc[(df.index >= "2011-01-01") & (df.index < "2011-04-16"), "TA"] = np.nan  # short 2011
    return write_flux_csv(tmp_path_factory.mktemp("gappy") / "g.csv", df)


def test_short_driver_gaps_inside_windows_are_filled_targets_stay_measured(gappy):
    cfg = PrepareConfig(data=str(gappy), target="NEE", columns=("TA", "PPFD_IN"),
                        sequence_length=30, min_val_samples=10)
    dlfm = prepare(cfg.replace(window_gap_days=0))
    filled = prepare(cfg)  # default: gaps of up to 3 days filled inside windows
    assert len(filled.y) > 1.5 * len(dlfm.y)
    table_days = set(filled.table.dropna(subset=["TA"]).index.values.astype("datetime64[D]").tolist())
    assert set(filled.days.tolist()) <= table_days  # no target on a gap day
    assert np.isfinite(filled.X).all()
    # the 6-day gap is longer than 3: windows spanning it are still no samples
    gap = pd.Timestamp(filled.table.index.min()) + pd.Timedelta(days=200)
    after = (filled.days >= np.datetime64(gap.date())) & (
        filled.days < np.datetime64((gap + pd.Timedelta(days=35)).date()))
    assert not after.any()


def test_fold_years_and_days_do_not_change_with_l_in_matched_mode(gappy):
    cfg = PrepareConfig(data=str(gappy), target="NEE", columns=("TA", "PPFD_IN"),
                        eval_years=1, match_length=90)
    a, b = prepare(cfg.replace(sequence_length=1)), prepare(cfg.replace(sequence_length=90))
    # 2011 has between 116 (the rule at L=90) and 192 (at L=1) samples: kept at every L
    assert 116 <= a.samples_per_year()[2011] < 192 and 2011 in a.fold_years
    assert a.fold_years == b.fold_years and a.eval_years == b.eval_years
    assert np.array_equal(a.days, b.days)


def test_a_searched_l_study_and_its_reports_use_the_same_days(gappy):
    prep = PrepareConfig(data=str(gappy), target="NEE", columns=("TA", "PPFD_IN"), eval_years=1)
    spec = build_spec("lstm", prep, length_given=False, n_trials=1)
    assert not spec.fixed_length
    days = {L: prepare(trial_prep(spec, L)).days for L in (7, 14, 30)}
    assert all(np.array_equal(days[7], d) for d in days.values())
    # non-sequence families search L too when their feed uses the window (issue 10 item 5d)
    assert not build_spec("xgboost", prep, length_given=False, n_trials=1).fixed_length


@needs_shared
def test_umb_matched_at_90_keeps_winter():
    cfg = PrepareConfig(data=str(UMB), target="NEE", columns=("TA", "PPFD_IN", "SW_IN"),
                        sequence_length=30, match_length=90)
    ds = prepare(cfg)
    months = np.bincount(pd.DatetimeIndex(ds.days).month, minlength=13)[1:]
    assert len(ds.y) > 4000 and months[:3].min() > 0.6 * months.max()
    assert prepare(cfg.replace(sequence_length=1)).fold_years == ds.fold_years

"""The data pipeline: reading, DLFM daily aggregation, windows, splits, caching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import (
    DATA,
    MMS,
    PUE,
    REFERENCE,
    TW3,
    UMB,
    needs_shared,
    simple_site,
    write_flux_csv,
)

from dlfm_auto import UserError
from dlfm_auto.data import PrepareConfig, clear_caches, load_daily, prepare
from dlfm_auto.data._windows import build_calendar, valid_targets, windows

UMB_COLS = ("TA", "PPFD_IN", "SW_IN")


# ---------------------------------------------------------------- real files


@needs_shared
def test_umb_daily_table_matches_dlfm_reference():
    table, _, source = load_daily(PrepareConfig(data=str(UMB), target="NEE", columns=UMB_COLS))
    ref = pd.read_csv(REFERENCE, parse_dates=["DAY"]).set_index("DAY")
    assert len(ref) == 5285
    assert table.index.equals(ref.index)
    for c in ref.columns:
        a, b = table[c].to_numpy(), ref[c].to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), c
        m = ~np.isnan(b)
        np.testing.assert_allclose(a[m], b[m], rtol=1e-9, atol=0, err_msg=c)
    assert source.target == "NEE" and source.step_minutes == 30


@needs_shared
@pytest.mark.parametrize("path", sorted((DATA / "oneflux").glob("*.csv.gz")) + [TW3, PUE],
                         ids=lambda p: p.name.split("_")[0 if "oneflux" in str(p) else 1])
def test_every_shared_file_loads(path):
    ds = prepare(PrepareConfig(data=str(path), sequence_length=7))
    assert ds.X.ndim == 3 and ds.X.shape[1] == 7 and len(ds.y) > 300
    assert np.isfinite(ds.X).all() and np.isfinite(ds.y).all()
    assert len(ds.eval_years) >= 1 and len(ds.fold_years) >= 1
    assert not set(ds.eval_years) & set(ds.fold_years)
    assert ds.source.target in {"NEE", "FC", "NEE_VUT_REF"}


@needs_shared
def test_us_tw3_partial_last_year_and_fc_target():
    ds = prepare(PrepareConfig(data=str(TW3)))
    assert ds.source.target == "FC" and "default order" in ds.source.target_source
    assert "P" not in ds.source.inputs  # logged only from 2017: left out of the default set
    assert any("default input P left out" in n for n in ds.report.notes)
    assert max(ds.years) == 2018 and ds.days.max() < np.datetime64("2018-07-01")
    assert ds.eval_years[-1] == 2018


@needs_shared
def test_hourly_file_scales_daily_counts():
    _, rep, src = load_daily(PrepareConfig(data=str(MMS)))
    assert src.step_minutes == 60
    _, rep9, _ = load_daily(PrepareConfig(data=str(MMS), min_count=18))
    # 9 half-hours = 5 hourly records; doubling it must drop more days
    assert rep9.days_kept < rep.days_kept


@needs_shared
def test_daily_fluxnet_file_skips_aggregation():
    table, rep, src = load_daily(PrepareConfig(data=str(PUE)))
    assert src.format == "daily" and src.step_minutes == 1440 and src.target == "NEE_VUT_REF"
    assert table.index.is_unique and (np.diff(table.index.values).astype(int) > 0).all()
    assert "daily file" in " ".join(rep.notes)


# ---------------------------------------------------------------- rules, known answers


def test_ustar_modes(tmp_path):
    df = simple_site(days=3 * 365)
    day = df.index.floor("D")
    low_days = day.isin(day.unique()[::10])
    df.loc[low_days, "USTAR"] = 0.1  # every 10th day is calm
    path = write_flux_csv(tmp_path / "u.csv", df)
    na, rep_na, _ = load_daily(PrepareConfig(data=str(path), target="NEE", columns=("TA",)))
    assert rep_na.nee_missing_ustar == pytest.approx(len(day.unique()[::10]), abs=2)
    assert na["NEE"].isna().sum() >= rep_na.nee_missing_ustar
    drop, _, _ = load_daily(PrepareConfig(data=str(path), target="NEE", columns=("TA",),
                                          ustar_mode="drop"))
    off, _, _ = load_daily(PrepareConfig(data=str(path), target="NEE", columns=("TA",),
                                         ustar_mode="off"))
    assert off["NEE"].isna().sum() == 0
    assert drop["NEE"].isna().sum() >= rep_na.nee_missing_ustar  # all records of calm days go


def test_single_day_gap_interpolated_never_nee(tmp_path):
    df = simple_site(days=3 * 365)
    gap = df.index.floor("D") == pd.Timestamp("2010-06-15")
    df.loc[gap, ["TA", "NEE"]] = np.nan
    path = write_flux_csv(tmp_path / "g.csv", df)
    table, rep, _ = load_daily(PrepareConfig(data=str(path), target="NEE", columns=("TA",)))
    row = table.loc["2010-06-15"]
    assert np.isnan(row["NEE"])
    mid = (table.loc["2010-06-14", "TA"] + table.loc["2010-06-16", "TA"]) / 2
    assert row["TA"] == pytest.approx(mid)
    assert rep.single_gaps_filled >= 1


def test_season_years_from_snow(tmp_path):
    df = simple_site(days=4 * 365)
    df["D_SNOW"] = 0.0
    for y, last in ((2011, "2011-03-20"), (2012, "2012-04-05")):
        df.loc[(df.index >= f"{y}-01-01") & (df.index < pd.Timestamp(last) + pd.Timedelta("1D")),
               "D_SNOW"] = 10.0
    path = write_flux_csv(tmp_path / "s.csv", df)
    table, rep, _ = load_daily(PrepareConfig(data=str(path), target="NEE", columns=("TA",)))
    sy = table["SEASON_YEAR"]
    assert sy.loc["2011-03-20"] == 2010 and sy.loc["2011-03-21"] == 2011
    assert sy.loc["2012-04-05"] == 2011 and sy.loc["2012-04-06"] == 2012
    assert sy.loc["2010-02-01"] == 2010  # no snow in 2010: calendar start
    assert "D_SNOW" in rep.season_rule
    cal, _, _ = load_daily(PrepareConfig(data=str(path), target="NEE", columns=("TA",),
                                         season_from_snow=False, season_start_month=10))
    assert cal["SEASON_YEAR"].loc["2011-09-30"] == 2010
    assert cal["SEASON_YEAR"].loc["2011-10-01"] == 2011


def test_constant_column_dropped_with_a_note_not_a_warning(tmp_path):
    import warnings

    df = simple_site()
    df["D_SNOW"] = 0.0  # snow-free site: the DLFM code turned this into NaN everywhere
    path = write_flux_csv(tmp_path / "c.csv", df)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the data layer speaks through notes only
        ds = prepare(PrepareConfig(data=str(path), target="NEE", columns=("TA", "D_SNOW"),
                                   season_from_snow=False))
    assert any("D_SNOW is constant" in m for m in ds.messages)
    assert ds.feature_names == ("TA",)
    assert np.isfinite(ds.cv_splits()[0].X_train).all()


def test_windows_match_a_plain_loop(site_file):
    table, _, _ = load_daily(
        PrepareConfig(data=str(site_file), target="NEE", columns=("TA", "PPFD_IN"))
    )
    table = table.drop(table.index[[40, 41, 42, 100]])  # multi-day and single holes
    table.loc[table.index[200], "NEE"] = np.nan
    cal = build_calendar(table, ("TA", "PPFD_IN"))
    L = 5
    got = windows(cal, L, valid_targets(cal, L))
    # reference: a loop over days, the way the DLFM code did it
    expect = []
    f, nee = cal.features, cal.nee
    for d in range(L - 1, len(nee)):
        w = f[d - L + 1 : d + 1]
        if np.isfinite(w).all() and np.isfinite(nee[d]):
            expect.append(w)
    np.testing.assert_array_equal(got, np.array(expect, dtype=np.float32))


def test_matched_mode_uses_the_same_target_days(site_file):
    base = dict(data=str(site_file), target="NEE", columns=("TA", "PPFD_IN"))
    days = [prepare(PrepareConfig(**base, sequence_length=L, match_length=30)).days
            for L in (1, 7, 30)]
    assert all(np.array_equal(days[0], d) for d in days[1:])
    free = prepare(PrepareConfig(**base, sequence_length=1)).days
    assert len(free) > len(days[0])


def test_optional_inputs(site_file):
    base = dict(data=str(site_file), target="NEE", columns=("TA",), sequence_length=3)
    ds = prepare(PrepareConfig(**base, doy=True, stats_window=7, lag_nee=True))
    assert ds.feature_names == ("TA", "TA_mean7d", "TA_var7d", "DOY", "NEE_lag1")
    # yesterday's NEE in the last step equals the previous sample's target where consecutive
    consec = np.flatnonzero(np.diff(ds.days).astype(int) == 1)
    np.testing.assert_allclose(ds.X[consec + 1, -1, 4], ds.y[consec], rtol=1e-6)


def test_splits_normalise_on_training_part_only(site_file):
    ds = prepare(PrepareConfig(data=str(site_file), target="NEE", columns=("TA", "PPFD_IN"),
                               sequence_length=7, eval_years=1, folds=2))
    assert ds.eval_years == (2013,) and ds.fold_years[:2] == (2012, 2011)
    splits = ds.cv_splits()
    assert [s.name for s in splits] == ["val=2012", "val=2011"]
    for s in splits:
        flat = s.X_train.reshape(-1, s.n_features)
        np.testing.assert_allclose(flat.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(flat.std(0), 1, atol=1e-3)
        assert 2013 not in np.unique(s.train_days.astype("datetime64[Y]").astype(int) + 1970)
    ev = ds.eval_split()
    assert ev.val_years == (2013,)
    assert len(ev.y_train) + len(ev.y_val) == len(ds.y)


def test_min_validation_size_rule(site_file):
    base = dict(data=str(site_file), target="NEE", columns=("TA",), eval_years=1)
    with pytest.raises(UserError, match="no fold possible"):
        prepare(PrepareConfig(**base, min_val_samples=367))  # no year has 367 samples
    # DLFM rule: 200 - floor(sqrt(80 L)); L=1 -> 192, every full year passes
    assert prepare(PrepareConfig(**base)).fold_years == (2012, 2011, 2010)
    # a year just under the threshold is skipped, the others stay
    assert prepare(PrepareConfig(**base, min_val_samples=366)).fold_years == (2012,)


def test_caches_return_the_same_samples(site_file):
    cfg = PrepareConfig(data=str(site_file), target="NEE", columns=("TA",), sequence_length=5)
    a = prepare(cfg)
    assert prepare(cfg) is a  # in-memory
    clear_caches()  # new process: disk cache only
    b = prepare(cfg)
    assert b is not a
    np.testing.assert_array_equal(a.X, b.X)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != prepare(cfg.replace(sequence_length=6)).fingerprint()

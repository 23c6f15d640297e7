"""The synthetic demo site: format, determinism, atomic writes, and memory that is really there."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from dlfm_auto._errors import UserError
from dlfm_auto.data._demo import COLUMNS, demo_hidden_store, simulate, write_demo_site

HEADER = "TIMESTAMP_START,TIMESTAMP_END,NEE,TA,PPFD_IN,SW_IN,VPD,P,USTAR,D_SNOW,RH,WS"


def read(path) -> pd.DataFrame:
    return pd.read_csv(path, comment="#")


def test_labels_header_gaps_and_timestamps(tmp_path):
    p = write_demo_site(tmp_path / "demo.csv", years=2, seed=1)
    lines = p.read_text().split("\n", 3)
    assert lines[0] == "# Site: DEMO-SYNTHETIC"
    assert lines[1] == "# Source: dlfm_auto demo-data (synthetic, seed=1) -- not real measurements"
    assert lines[2] == HEADER
    df = read(p)
    # the hidden store is never in the file
    assert not any(w in c.upper() for c in df.columns for w in ("HIDDEN", "STORE", "SWC"))
    assert (df["NEE"] == -9999).mean() > 0.04
    assert all((df[c] == -9999).any() for c in ("TA", "PPFD_IN", "P", "USTAR"))
    assert not (df["D_SNOW"] == -9999).any() and (df["D_SNOW"] > 0).any()
    start = pd.to_datetime(df["TIMESTAMP_START"].astype(str), format="%Y%m%d%H%M")
    end = pd.to_datetime(df["TIMESTAMP_END"].astype(str), format="%Y%m%d%H%M")
    assert start.iloc[0] == pd.Timestamp("2015-01-01") and end.iloc[-1] == pd.Timestamp("2017-01-01")
    assert (start.diff().iloc[1:] == pd.Timedelta(minutes=30)).all()
    assert (end - start == pd.Timedelta(minutes=30)).all()


def test_written_values_are_the_simulated_ones_rounded(tmp_path):
    """The hand-written formatter (to_csv is too slow) must print exactly the rounded values."""
    df = read(write_demo_site(tmp_path / "demo.csv", years=1, seed=2))
    frame = simulate(1, 2).halfhourly
    for col, decimals in COLUMNS.items():
        want = np.nan_to_num(np.round(frame[col].to_numpy(), decimals), nan=-9999.0)
        np.testing.assert_array_equal(df[col].to_numpy(), want, err_msg=col)


def test_plausible_physics():
    f = simulate(2, 0).halfhourly.dropna()  # records with a gap in any column left out
    night = f["PPFD_IN"] <= 4
    assert f["TA"].between(-30, 40).all() and f["SW_IN"].max() < 1300
    assert (f["PPFD_IN"] / f["SW_IN"]).where(f["SW_IN"] > 50).median() == pytest.approx(2.1, rel=0.05)
    assert (f["USTAR"] > 0).all() and (f.loc[night, "USTAR"] < 0.2).mean() > 0.2
    assert 0.02 < (f.loc[~night, "USTAR"] < 0.2).mean() < 0.3
    assert (f["VPD"] >= 0).all() and f["RH"].between(0, 100).all()
    # storms show up in daylight records (the pipeline averages daylight only)
    assert f.loc[~night, "P"].sum() > 0.8 * f["P"].sum()
    snowy = f["D_SNOW"].groupby(f.index.year).max()
    assert (snowy > 0).all() and (f["D_SNOW"][f.index.month.isin([7, 8])] == 0).all()


def test_six_years_are_fast(tmp_path):
    t0 = time.perf_counter()
    write_demo_site(tmp_path / "a.csv")  # 6 years, the default
    elapsed = time.perf_counter() - t0
    assert elapsed < 5, f"6 years took {elapsed:.1f} s (target < 2 s): lost vectorisation?"


def test_deterministic_gzip_and_atomic(tmp_path):
    a = write_demo_site(tmp_path / "a.csv", years=2, seed=3).read_bytes()
    assert write_demo_site(tmp_path / "b.csv", years=2, seed=3).read_bytes() == a
    assert write_demo_site(tmp_path / "c.csv", years=2, seed=4).read_bytes() != a
    gz = write_demo_site(tmp_path / "sub" / "d.csv.gz", years=2, seed=3)
    assert gz.read_bytes()[:2] == b"\x1f\x8b" and gzip.decompress(gz.read_bytes()) == a
    assert write_demo_site(gz, years=2, seed=3).read_bytes() == gz.read_bytes()  # overwrite
    pd.testing.assert_frame_equal(pd.read_csv(gz, comment="#"), read(tmp_path / "a.csv"))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "a.csv", "b.csv", "c.csv", "d.csv.gz"]  # no temp files left behind
    with pytest.raises(UserError, match="years=0"):
        write_demo_site(tmp_path / "e.csv", years=0)


def test_memory_is_planted(tmp_path):
    """Held-out R² with a 30-day rain mean beats today's drivers alone by >= 0.1."""
    df = read(write_demo_site(tmp_path / "demo.csv", years=6, seed=0)).replace(-9999, np.nan)
    df.index = pd.to_datetime(df["TIMESTAMP_START"].astype(str), format="%Y%m%d%H%M")
    light = df[df["PPFD_IN"] > 4]
    daily = light.groupby(light.index.normalize())[["NEE", "PPFD_IN", "TA", "P"]].mean().asfreq("D")
    daily["P30"] = daily["P"].rolling(30, min_periods=20).mean()
    daily = daily.dropna()
    train, test = daily[daily.index.year < 2019], daily[daily.index.year >= 2019]

    def held_out_r2(cols: list[str]) -> float:
        with threadpool_limits(1):  # 1,400 rows: OpenMP threads only fight other processes
            model = HistGradientBoostingRegressor(random_state=0).fit(train[cols], train["NEE"])
        err = model.predict(test[cols]) - test["NEE"]
        return 1 - (err**2).sum() / ((test["NEE"] - test["NEE"].mean()) ** 2).sum()

    today = held_out_r2(["PPFD_IN", "TA", "P"])
    memory = held_out_r2(["PPFD_IN", "TA", "P", "P30"])
    print(f"held-out R²: today's drivers {today:.3f}, + 30-day rain {memory:.3f}")
    assert memory > today + 0.1, (today, memory)

    store = demo_hidden_store(years=6, seed=0)
    assert len(store) == len(pd.date_range("2015-01-01", "2020-12-31")) and store.index[0].year == 2015
    assert store.between(0, 1).all() and store.std() > 0.1
    # the store is what the 30-day rain mean proxies: strongly related in the growing season
    summer = daily.index.month.isin([5, 6, 7, 8, 9])
    assert daily["P30"][summer].corr(store.reindex(daily.index)[summer]) > 0.6

"""The synthetic demo site: format, determinism, and memory that is really there."""

from __future__ import annotations

import gzip

import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

from dlfm_auto.data import PrepareConfig, load_daily, write_demo_site
from dlfm_auto.data._demo import demo_hidden_store


def test_format_and_labels(tmp_path):
    p = write_demo_site(tmp_path / "demo.csv", years=3, seed=1)
    lines = p.read_text().splitlines()
    assert lines[0] == "# Site: DEMO-SYNTHETIC"
    assert "synthetic" in lines[1] and "not real" in lines[1]
    assert lines[2].startswith("TIMESTAMP_START,TIMESTAMP_END,NEE,TA,PPFD_IN")
    df = pd.read_csv(p, comment="#")
    assert "hidden" not in " ".join(df.columns).lower() and "SWC" not in df.columns
    assert (df == -9999).any().any()
    ts = pd.to_datetime(df["TIMESTAMP_START"].astype(str), format="%Y%m%d%H%M")
    assert (ts.diff().dropna() == pd.Timedelta(minutes=30)).all()
    assert (df["D_SNOW"] > 0).any()


def test_deterministic_and_gzip(tmp_path):
    a = write_demo_site(tmp_path / "a.csv", years=2, seed=3).read_bytes()
    b = write_demo_site(tmp_path / "b.csv", years=2, seed=3).read_bytes()
    c = write_demo_site(tmp_path / "c.csv", years=2, seed=4).read_bytes()
    assert a == b and a != c
    gz = write_demo_site(tmp_path / "d.csv.gz", years=2, seed=3)
    assert gzip.decompress(gz.read_bytes()) == a


def test_memory_is_planted(tmp_path):
    """Held-out R² with a 30-day rain mean beats today's drivers alone by >= 0.1."""
    p = write_demo_site(tmp_path / "demo.csv", years=6, seed=0)
    t, _, _ = load_daily(PrepareConfig(data=str(p)))
    t = t.asfreq("D")
    t["P30"] = t["P"].rolling(30, min_periods=20).mean()
    t = t.dropna()
    train, test = t[t.index.year < 2019], t[t.index.year >= 2019]

    def held_out_r2(cols):
        model = HistGradientBoostingRegressor(random_state=0)
        pred = model.fit(train[cols], train["NEE"]).predict(test[cols])
        return 1 - ((pred - test["NEE"]) ** 2).sum() / ((test["NEE"] - test["NEE"].mean()) ** 2).sum()

    today = held_out_r2(["PPFD_IN", "TA", "P"])
    memory = held_out_r2(["PPFD_IN", "TA", "P", "P30"])
    assert memory > today + 0.1, (today, memory)
    store = demo_hidden_store(years=6, seed=0)
    assert store.between(0, 1).all() and store.std() > 0.1

"""The SYNTHETIC demo site: an AmeriFlux BASE file with planted ecosystem memory.

For the quickstart and for tests with a known answer, never instead of real data. NEE responds
to light and temperature, and to a hidden soil-moisture store filled by the rain of the last
~30 days (an exponential bucket, time constant 30 days) that is NOT written to the file: a
model that sees only today's drivers cannot know it, one that sees a month of rain can.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

LATITUDE = 45.0
STORE_DAYS = 30.0  # time constant of the hidden soil-moisture store


@dataclass
class DemoSite:
    halfhourly: pd.DataFrame  # the file's columns, NaN = missing
    store: pd.Series  # daily hidden store, 0..1 (not in the file)


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """AR(1) noise via a linear filter (no Python loop)."""
    return lfilter([1.0], [1.0, -phi], rng.normal(0.0, sigma * np.sqrt(1 - phi**2), n))


def simulate(years: int = 6, seed: int = 0, start_year: int = 2015) -> DemoSite:
    """Simulate the site; every array is built with vectorised operations."""
    rng = np.random.default_rng(seed)
    days = pd.date_range(f"{start_year}-01-01", f"{start_year + years - 1}-12-31", freq="D")
    nd = len(days)
    doy = days.day_of_year.to_numpy()
    season = np.sin(2 * np.pi * (doy - 110) / 365.25)

    # daily weather: cloudiness, temperature anomaly, humidity, rain (drier mid-summer spell)
    cloud = 1 / (1 + np.exp(-(0.8 + _ar1(rng, nd, 0.6, 1.2))))  # fraction of clear sky
    # wet and dry spells of weeks (a slow regime) make the store swing between empty and full
    regime = np.exp(_ar1(rng, nd, 0.97, 1.1))
    p_rain = np.clip((0.3 - 0.2 * np.exp(-(((doy - 205) / 25.0) ** 2))) * regime, 0.01, 0.9)
    wet = rng.random(nd) < p_rain
    rain = np.where(wet, rng.gamma(0.8, 9.0, nd), 0.0)
    cloud = np.where(wet, cloud * 0.45, cloud)
    ta_day = 9 + 13 * season + _ar1(rng, nd, 0.75, 3.0)
    rh_day = np.clip(65 - 10 * season + 20 * wet + _ar1(rng, nd, 0.5, 8.0), 20, 98)

    # snow pack (cm): accumulate precipitation on freezing days, melt on warm ones
    snow = np.zeros(nd)
    pack = 0.0
    for i in range(nd):  # 2,000 days: a recursion with a floor, cheap
        pack = max(0.0, pack + (rain[i] if ta_day[i] < 0 else 0.0) - max(0.0, ta_day[i]) * 0.6)
        snow[i] = pack
    liquid = np.where(ta_day < 0, 0.0, rain)

    # the hidden store: exponential bucket of liquid rain, ~30-day memory, mapped to 0..1
    k = np.exp(-1.0 / STORE_DAYS)
    bucket = lfilter([1.0], [1.0, -k], liquid)
    store = bucket / (bucket + np.median(bucket[bucket > 0]))

    # half-hourly grid
    n = nd * 48
    idx = pd.date_range(days[0], periods=n, freq="30min")
    d = np.repeat(np.arange(nd), 48)
    hour = (np.tile(np.arange(48), nd) + 0.5) / 2.0
    dec = np.radians(23.44) * np.sin(2 * np.pi * (284 + doy[d]) / 365.0)
    lat = np.radians(LATITUDE)
    sin_el = np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(
        np.radians(15 * (hour - 12)))
    sw_pot = 1100 * np.clip(sin_el, 0, None)
    sw = sw_pot * (0.25 + 0.75 * cloud[d]) * (1 + 0.05 * rng.normal(size=n))
    sw = np.clip(sw, 0, None)
    ppfd = np.clip(2.1 * sw * (1 + 0.03 * rng.normal(size=n)), 0, None)
    ta = ta_day[d] + 4.5 * cloud[d] * np.sin(2 * np.pi * (hour - 9) / 24) + rng.normal(0, 0.4, n)
    es = 0.6108 * np.exp(17.27 * ta / (ta + 237.3))
    vpd = np.clip(es * (1 - rh_day[d] / 100) * 10 * (1 + 0.3 * np.clip(sin_el, 0, None)), 0, None)
    # rain falls in a storm of 3-6 h starting between 07 and 15 h: it shows in daylight records
    start = rng.integers(14, 30, nd)
    length = rng.integers(6, 13, nd)
    hh = np.tile(np.arange(48), nd)
    in_storm = (hh >= start[d]) & (hh < start[d] + length[d])
    p = np.where(in_storm, rain[d] / length[d], 0.0)
    ws = rng.gamma(2.0, 1.3, n)
    ustar = np.clip(0.08 + 0.07 * ws + 0.2 * np.clip(sin_el, 0, None) + rng.normal(0, 0.05, n), 0.01,
                    None)

    # fluxes: light-use response x temperature x water; respiration also rises with water
    water = store[d]
    f_t = np.where(ta > 0, np.exp(-(((ta - 22) / 11.0) ** 2)), 0.0)
    gpp = (0.045 * ppfd * 28 / (0.045 * ppfd + 28)) * f_t * (0.05 + 0.95 * water**1.5) * 2.0
    reco = 2.5 * 2.0 ** ((ta - 10) / 10) * (0.6 + 0.4 * water)
    nee = reco - gpp + rng.normal(0, 1.2, n)

    frame = pd.DataFrame({
        "NEE": nee, "TA": ta, "PPFD_IN": ppfd, "SW_IN": sw, "VPD": vpd, "P": p,
        "USTAR": ustar, "WS": ws, "RH": np.repeat(rh_day, 48), "D_SNOW": snow[d],
    }, index=idx)
    # gaps: random NEE and driver records, a few multi-day NEE gaps; D_SNOW stays complete
    frame.loc[rng.random(n) < 0.05, "NEE"] = np.nan
    for _ in range(3 * years // 2):
        s = rng.integers(0, n - 48 * 10)
        frame.iloc[s : s + 48 * int(rng.integers(2, 8)), 0] = np.nan
    for c in ("TA", "PPFD_IN", "SW_IN", "VPD", "P", "USTAR", "WS", "RH"):
        frame.loc[rng.random(n) < 0.01, c] = np.nan
    return DemoSite(frame, pd.Series(store, index=days, name="hidden_store"))


def demo_hidden_store(years: int = 6, seed: int = 0, start_year: int = 2015) -> pd.Series:
    """The daily hidden store of the site ``write_demo_site`` writes with the same arguments."""
    return simulate(years, seed, start_year).store


def write_demo_site(path: str | os.PathLike, years: int = 6, seed: int = 0,
                    start_year: int = 2015) -> Path:
    """Write the synthetic site as an AmeriFlux BASE file (gzip if ``path`` ends in .gz)."""
    if years < 1:
        from dlfm_auto._errors import UserError

        raise UserError(f"invalid years={years}: must be >= 1")
    site = simulate(years, seed, start_year)
    f = site.halfhourly
    out = pd.DataFrame({
        "TIMESTAMP_START": f.index.strftime("%Y%m%d%H%M"),
        "TIMESTAMP_END": (f.index + pd.Timedelta(minutes=30)).strftime("%Y%m%d%H%M"),
    })
    for c in f.columns:
        out[c] = np.round(f[c].to_numpy(), 4)
    body = out.fillna(-9999).to_csv(index=False, float_format="%.4f", lineterminator="\n")
    body = body.replace("-9999.0000", "-9999")
    text = (f"# Site: DEMO-SYNTHETIC\n# Source: dlfm_auto demo-data (synthetic, seed={seed}) "
            f"-- not real measurements\n" + body)
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(text.encode(), mtime=0) if dest.suffix == ".gz" else text.encode()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest

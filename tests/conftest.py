"""Shared fixtures: where the real data lives, and small flux files with known answers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# Tests never touch the user's cache folder.
os.environ.setdefault("DLFM_AUTO_CACHE", tempfile.mkdtemp(prefix="dlfm_auto_test_cache_"))

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
UMB = DATA / "oneflux" / "US-UMB_NEE_met.csv.gz"
TW3 = DATA / "US-Tw3" / "AMF_US-Tw3_BASE_HH_5-5.csv.gz"
MMS = DATA / "oneflux" / "US-MMS_NEE_met.csv.gz"
PUE = DATA / "fluxdatakit" / "FLX_FR-Pue_FLUXDATAKIT_FULLSET_DD_2000_2014_2-3.csv.gz"
REFERENCE = SHARED / "reference" / "dlfm_daily_US-UMB.csv.gz"

needs_shared = pytest.mark.skipif(
    not DATA.exists(),
    reason=f"real flux data not found at {DATA} (../shared/data beside the repo); "
    "these tests need the AmeriFlux/FLUXNET files",
)


def write_flux_csv(path: Path, frame: pd.DataFrame, step_minutes: int = 30) -> Path:
    """Write ``frame`` (indexed by record start time) as an AmeriFlux BASE file."""
    start = frame.index
    end = start + pd.Timedelta(minutes=step_minutes)
    out = frame.copy()
    out.insert(0, "TIMESTAMP_END", end.strftime("%Y%m%d%H%M"))
    out.insert(0, "TIMESTAMP_START", start.strftime("%Y%m%d%H%M"))
    body = out.fillna(-9999).to_csv(index=False, lineterminator="\r\n")
    path.write_text("# Site: XX-Tst\r\n# Version: test\r\n\r\n" + body)
    return path


def simple_site(days: int = 4 * 365, seed: int = 0, start: str = "2010-01-01") -> pd.DataFrame:
    """Half-hourly records whose daylight-mean NEE is a known function of TA and light."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=days * 48, freq="30min")
    hour = idx.hour + idx.minute / 60
    doy = idx.day_of_year.to_numpy()
    sun = np.clip(np.sin((hour - 6) / 12 * np.pi), 0, None)
    ppfd = 1500 * sun * (0.6 + 0.4 * np.sin(2 * np.pi * (doy - 80) / 365).clip(0))
    ta = 10 + 10 * np.sin(2 * np.pi * (doy - 110) / 365) + 3 * sun + rng.normal(0, 1, len(idx))
    nee = -0.01 * ppfd + 0.2 * ta + rng.normal(0, 0.5, len(idx))
    return pd.DataFrame(
        {"NEE": nee, "TA": ta, "PPFD_IN": ppfd, "SW_IN": ppfd / 2.1,
         "USTAR": 0.5 + 0.1 * rng.random(len(idx))},
        index=idx,
    )


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    return write_flux_csv(tmp_path / "site.csv", simple_site())

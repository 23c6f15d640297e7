"""Time `prepare` on US-UMB (TA, PPFD_IN, SW_IN) for L in {1, 30, 90, 120}.

    python bench/bench_prepare.py

cold        : no caches at all (parse + aggregate + windows + split plan)
disk-cached : a new process's first call when the daily table is in the disk cache
mem-cached  : a repeated call in the same process (what every trial after the first sees)
dlfm-style  : the DLFM approach for comparison, in the same run: pandas groupby aggregation and
              a Python loop over days to build the windows
Targets (issue #2): cold L=90 < 0.3 s, cached < 10 ms.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd
from _common import UMB, UMB_COLUMNS, require_data, timeit

os.environ["DLFM_AUTO_CACHE"] = tempfile.mkdtemp(prefix="bench_prepare_")

from dlfm_auto.data import PrepareConfig, clear_caches, prepare  # noqa: E402


def dlfm_style(L: int) -> int:
    """Reference: groupby-mean per day, then a Python loop over days for the windows."""
    df = pd.read_csv(UMB, comment="#", na_values=[-9999])
    df["day"] = pd.to_datetime(df["TIMESTAMP_START"].astype(str), format="%Y%m%d%H%M").dt.floor("D")
    d = df[df["PPFD_IN"] > 4]
    cols = [*UMB_COLUMNS, "USTAR"]
    g = d.groupby("day")
    means, counts = g[[*cols, "NEE"]].mean(), g[[*cols, "NEE"]].count()
    daily = means[(counts[cols] >= 9).all(axis=1)].copy()
    daily.loc[counts.loc[daily.index, "NEE"] < 9, "NEE"] = np.nan
    daily = daily.reindex(pd.date_range(daily.index.min(), daily.index.max()))
    X, y = [], []
    for i in range(L - 1, len(daily)):
        w = daily.iloc[i - L + 1 : i + 1]
        if w[list(UMB_COLUMNS)].notna().all().all() and pd.notna(w["NEE"].iloc[-1]):
            X.append(w[list(UMB_COLUMNS)].to_numpy())
            y.append(w["NEE"].iloc[-1])
    return len(y)


def main() -> None:
    require_data()
    print(f"prepare on {UMB.name} ({', '.join(UMB_COLUMNS)}); median of 5 runs")
    print(f"{'L':>4} {'cold s':>8} {'disk-cached ms':>15} {'mem-cached ms':>14} "
          f"{'dlfm-style s':>13} {'ratio':>7} {'samples':>8}")
    for L in (1, 30, 90, 120):
        cfg = PrepareConfig(data=str(UMB), target="NEE", columns=UMB_COLUMNS, sequence_length=L)
        cold = timeit(lambda cfg=cfg: prepare(cfg), setup=lambda: clear_caches(disk=True))
        prepare(cfg)  # fill the disk cache
        disk = timeit(lambda cfg=cfg: prepare(cfg), setup=clear_caches)
        mem = timeit(lambda cfg=cfg: prepare(cfg), repeat=20)
        ref = timeit(lambda L=L: dlfm_style(L), repeat=1)
        n = len(prepare(cfg).y)
        print(f"{L:>4} {cold:>8.3f} {disk * 1e3:>15.1f} {mem * 1e3:>14.3f} {ref:>13.2f} "
              f"{ref / cold:>6.1f}x {n:>8}")


if __name__ == "__main__":
    main()

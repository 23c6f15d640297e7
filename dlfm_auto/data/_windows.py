"""Daily table -> (n, L, f) windows, with array operations only.

The table is laid on a complete calendar (missing days = NaN rows); a window is a sample when
all of its L days have every feature and its last day has NEE. Validity of every window comes
from one cumulative sum, the windows from ``sliding_window_view``: no loop over days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class Calendar:
    """Features on a complete daily calendar."""

    days: np.ndarray  # datetime64[D], consecutive
    features: np.ndarray  # (D, f) float64, NaN where missing
    nee: np.ndarray  # (D,)
    season_year: np.ndarray  # (D,) int, -1 on days absent from the table
    feature_names: tuple[str, ...]


def build_calendar(
    table: pd.DataFrame,
    inputs: tuple[str, ...],
    *,
    doy: bool = False,
    stats_window: int = 0,
    lag_nee: bool = False,
) -> Calendar:
    """Lay the daily table on a complete calendar and add the optional derived inputs."""
    first, last = table.index.min(), table.index.max()
    full = pd.date_range(first, last, freq="D")
    t = table.reindex(full)
    feats = [t[c].to_numpy(np.float64) for c in inputs]
    names = list(inputs)
    if stats_window > 0:
        for c in inputs:
            r = t[c].rolling(stats_window, min_periods=stats_window)
            feats += [r.mean().to_numpy(), r.var(ddof=0).to_numpy()]
            names += [f"{c}_mean{stats_window}d", f"{c}_var{stats_window}d"]
    if doy:
        feats.append(full.day_of_year.to_numpy(np.float64) / 366.0)
        names.append("DOY")
    if lag_nee:
        feats.append(t["NEE"].shift(1).to_numpy(np.float64))
        names.append("NEE_lag1")
    sy = t["SEASON_YEAR"].to_numpy()
    season = np.where(np.isnan(sy), -1, sy).astype(np.int64)
    return Calendar(
        days=full.values.astype("datetime64[D]"),
        features=np.column_stack(feats),
        nee=t["NEE"].to_numpy(np.float64),
        season_year=season,
        feature_names=tuple(names),
    )


def fill_short_gaps(cal: Calendar, max_gap: int) -> Calendar:
    """Interpolate each run of at most ``max_gap`` missing driver days between measured days.

    Per column, linearly between the days either side (a window then spans the gap instead
    of ending the sample). Days at the record's edges, longer runs and ``NEE_lag1`` (NEE is
    never interpolated) stay missing. Only windows see the filled values: targets must be
    measured days (see :func:`valid_targets`). Array operations only.
    """
    if max_gap <= 0:
        return cal
    F = cal.features.copy()
    idx = np.arange(len(F))
    for j, name in enumerate(cal.feature_names):
        if name == "NEE_lag1":
            continue
        col = F[:, j]
        ok = np.isfinite(col)
        if ok.all() or ok.sum() < 2:
            continue
        # length of the missing run each missing day belongs to
        edges = np.diff(np.r_[0, (~ok).astype(np.int8), 0])
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        run = np.zeros(len(col), dtype=np.int64)
        inside = (starts > 0) & (ends < len(col))
        for_len = np.repeat(np.where(inside, ends - starts, 10**9), ends - starts)
        run[~ok] = for_len
        fill = ~ok & (run <= max_gap)
        col[fill] = np.interp(idx[fill], idx[ok], col[ok])
    return Calendar(cal.days, F, cal.nee, cal.season_year, cal.feature_names)


def valid_targets(cal: Calendar, length: int, measured: np.ndarray | None = None
                  ) -> np.ndarray:
    """Boolean (D,): day d ends a complete window of ``length`` days and has NEE.

    ``measured``: the days whose drivers were measured (not gap-filled); a target must be one.
    """
    bad = ~np.isfinite(cal.features).all(axis=1)
    c = np.r_[0, np.cumsum(bad)]
    ok = np.zeros(len(bad), dtype=bool)
    if length <= len(bad):
        ok[length - 1 :] = (c[length:] - c[: len(bad) - length + 1]) == 0
    ok &= np.isfinite(cal.nee)
    return ok if measured is None else ok & measured


def windows(cal: Calendar, length: int, targets: np.ndarray) -> np.ndarray:
    """Windows (n, L, f) float32 ending on each day where ``targets`` is True."""
    idx = np.flatnonzero(targets)
    view = sliding_window_view(cal.features, length, axis=0)  # (D-L+1, f, L)
    return np.ascontiguousarray(view[idx - (length - 1)].transpose(0, 2, 1), dtype=np.float32)


def longest_valid_run(cal: Calendar) -> int:
    """Longest run of consecutive days with every feature (for error messages)."""
    ok = np.isfinite(cal.features).all(axis=1).astype(np.int8)
    if not ok.any():
        return 0
    edges = np.diff(np.r_[0, ok, 0])
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())

"""From flux records to the daily table: the DLFM "sample" semantics (README: "What a sample is").

Grouping uses integer day keys and ``np.bincount`` rather than pandas ``groupby``: the records
are already in time order, so a day's records are one contiguous run. Every rule counts what it
removed, so an empty result can say which rule emptied it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dlfm_auto._errors import UserError
from dlfm_auto.data._columns import SNOW, USTAR, ColumnChoice
from dlfm_auto.data._config import PrepareConfig
from dlfm_auto.data._ranges import plausible_range
from dlfm_auto.data._read import FluxRecords

_SNOW_DAILY = "_D_SNOW_DAILY"  # daylight-mean D_SNOW of table days (DLFM season rule only)


@dataclass
class FilterReport:
    """What each rule kept and removed; printed by ``prepare`` and stored with studies."""

    rows_read: int = 0
    step_minutes: int = 30
    non_numeric_by_column: dict[str, int] = field(default_factory=dict)  # text cells -> missing
    implausible_by_column: dict[str, int] = field(default_factory=dict)  # outside range -> missing
    daylight_rule: str = ""
    daylight_rows: int = 0
    days_with_daylight: int = 0
    days_dropped_by_column: dict[str, int] = field(default_factory=dict)
    days_kept: int = 0
    nee_missing_count: int = 0  # kept days whose NEE had too few valid records
    nee_missing_ustar: int = 0  # kept days whose NEE was removed by the USTAR rule
    ustar_rule: str = ""
    ustar_records_dropped: int = 0  # daylight records removed by the "drop-record" mode
    qc_rule: str = ""  # daily files: the QC rule on the target
    nee_missing_qc: int = 0  # daily files: kept days whose NEE failed the QC rule
    single_gaps_filled: int = 0
    days_total: int = 0
    days_with_nee: int = 0
    season_rule: str = ""
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"rows read: {self.rows_read} ({self.step_minutes}-min records)",
        ]
        for c, n in self.non_numeric_by_column.items():
            out.append(f"  text cells read as missing: {n} in {c}")
        for c, n in self.implausible_by_column.items():
            lo, hi = plausible_range(c) or (float("nan"), float("nan"))
            out.append(f"  outside the plausible range [{lo:g}, {hi:g}], set missing: {n} "
                       f"records of {c}")
        if self.step_minutes < 1440:
            out += [
                f"daylight rows ({self.daylight_rule}): {self.daylight_rows}",
                f"days with daylight records: {self.days_with_daylight}",
            ]
            for c, n in self.days_dropped_by_column.items():
                out.append(f"  dropped: {n} days with too few valid daylight {c}")
            out += [
                f"days kept: {self.days_kept}",
                f"  NEE missing (too few valid records): {self.nee_missing_count}",
                f"  NEE missing ({self.ustar_rule}): {self.nee_missing_ustar}"
                if not self.ustar_records_dropped else
                f"  daylight records dropped ({self.ustar_rule}): {self.ustar_records_dropped}",
                f"single-day gaps filled (drivers interpolated, NEE missing): "
                f"{self.single_gaps_filled}",
            ]
        else:
            for c, n in self.days_dropped_by_column.items():
                out.append(f"  dropped: {n} days with missing {c}")
            out.append(f"days kept: {self.days_kept}")
            if self.qc_rule:
                out.append(f"  NEE missing ({self.qc_rule}): {self.nee_missing_qc}")
        out += [
            f"days in table: {self.days_total} ({self.days_with_nee} with NEE)",
            f"season years: {self.season_rule}",
        ]
        out += [f"note: {n}" for n in self.notes]
        return out


def _scaled(count_halfhours: int, step: int) -> int:
    """A per-day count given in half-hours, for a file with ``step``-minute records."""
    return max(1, math.ceil(count_halfhours * 30 / step))


def _day_dates(day_keys: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(day_keys.astype(str), format="%Y%m%d")


def aggregate_daily(
    rec: FluxRecords, choice: ColumnChoice, cfg: PrepareConfig
) -> tuple[pd.DataFrame, FilterReport]:
    """Daily daylight means with the DLFM keep/missing rules.

    Returns a frame indexed by day (only the days kept, plus filled single-day gaps) with the
    inputs, USTAR (when present), ``NEE`` (the target) and ``SEASON_YEAR``.
    """
    rep = FilterReport(rows_read=rec.n_rows, step_minutes=rec.step_minutes,
                       non_numeric_by_column=dict(rec.non_numeric),
                       implausible_by_column=dict(rec.implausible), notes=list(rec.notes))
    if rec.step_minutes >= 1440:
        frame = _from_daily_file(rec, choice, cfg, rep)
    else:
        frame = _from_subdaily(rec, choice, cfg, rep)
    snow = frame.pop(_SNOW_DAILY).to_numpy() if _SNOW_DAILY in frame else None
    frame["SEASON_YEAR"] = season_years(frame.index, rec, cfg, rep, snow)
    rep.days_total = len(frame)
    rep.days_with_nee = int(frame["NEE"].notna().sum())
    if rep.days_with_nee == 0:
        if rec.step_minutes >= 1440:
            why = f"{rep.nee_missing_qc} removed by {rep.qc_rule or 'no QC rule'}"
        else:
            why = (f"{rep.nee_missing_count} days had too few valid records, "
                   f"{rep.nee_missing_ustar} removed by the USTAR rule")
        raise UserError(f"{rec.header.path}: no day has a valid daily {choice.target} after "
                        f"filtering ({why})")
    return frame, rep


def _from_daily_file(
    rec: FluxRecords, choice: ColumnChoice, cfg: PrepareConfig, rep: FilterReport
) -> pd.DataFrame:
    """FLUXNET DD rows as they are: 24-h gap-filled means (NEE in gC m-2 d-1), QC applied."""
    days = _day_dates(rec.timestamp // 10000)
    cols = list(choice.inputs) + ([USTAR] if USTAR in rec.values else [])
    frame = pd.DataFrame({c: rec.values[c] for c in cols}, index=days)
    frame["NEE"] = rec.values[choice.target]
    frame.index.name = "DAY"
    keep = frame[list(choice.inputs)].notna().all(axis=1)
    for c in choice.inputs:
        rep.days_dropped_by_column[c] = int(frame[c].isna().sum())
    rep.notes.append("daily file: no daylight filter, counts or USTAR rule applied")
    qc_col = dd_qc_column(choice.target)
    if qc_col in rec.values:
        qc = rec.values[qc_col]
        failed = qc < cfg.dd_qc_min  # a missing QC flag does not remove the day
        rep.qc_rule = f"{qc_col} < {cfg.dd_qc_min:g}"
        rep.nee_missing_qc = int((keep.to_numpy() & failed & frame["NEE"].notna().to_numpy()).sum())
        frame.loc[failed, "NEE"] = np.nan
    else:
        rep.notes.append(f"no {qc_col} column: daily NEE used without a QC filter")
    frame = frame[keep]
    rep.days_kept = len(frame)
    if frame.empty:
        worst = max(rep.days_dropped_by_column, key=rep.days_dropped_by_column.get)
        raise UserError(f"{rec.header.path}: every day has a missing input ({worst} is missing "
                        f"on {rep.days_dropped_by_column[worst]} days)")
    return frame


def dd_qc_column(target: str) -> str:
    """The FLUXNET quality column of a daily target (``NEE_VUT_REF`` -> ``NEE_VUT_REF_QC``)."""
    return f"{target}_QC"


def _day_counts(count_halfhours: int, day_step: np.ndarray) -> np.ndarray:
    """:func:`_scaled` per day, for days whose records have different steps."""
    return np.maximum(1, np.ceil(count_halfhours * 30 / day_step)).astype(np.int64)


def _from_subdaily(
    rec: FluxRecords, choice: ColumnChoice, cfg: PrepareConfig, rep: FilterReport
) -> pd.DataFrame:
    path = rec.header.path
    step = rec.step_minutes
    v = rec.values
    # Daylight: PPFD_IN when the file has it (and it is not empty), else SW_IN.
    ppfd = v.get("PPFD_IN")
    if ppfd is not None and np.isfinite(ppfd).any():
        light = ppfd > cfg.ppfd_threshold
        rep.daylight_rule = f"PPFD_IN > {cfg.ppfd_threshold:g}"
    elif "SW_IN" in v and np.isfinite(v["SW_IN"]).any():
        light = v["SW_IN"] > cfg.sw_threshold
        rep.daylight_rule = f"SW_IN > {cfg.sw_threshold:g} (no PPFD_IN)"
    else:
        raise UserError(f"{path}: needs PPFD_IN or SW_IN to tell daylight records")
    rep.daylight_rows = int(light.sum())
    if rep.daylight_rows == 0:
        raise UserError(f"{path}: the daylight rule ({rep.daylight_rule}) removed all "
                        f"{rec.n_rows} rows")
    use_ustar = USTAR in v and cfg.ustar_mode != "off"
    if use_ustar and cfg.ustar_mode == "drop-record":
        # DLFM's "drop": records with USTAR <= threshold (or missing) leave every column.
        calm = ~(v[USTAR] > cfg.ustar_threshold)
        rep.ustar_records_dropped = int((light & calm).sum())
        light = light & ~calm
        if not light.any():
            raise UserError(f"{path}: the USTAR rule (drop-record, USTAR <= "
                            f"{cfg.ustar_threshold:g}) removed every daylight record")

    day_key = rec.timestamp // 10000
    # Day index of every record; days are contiguous runs because records are sorted.
    starts = np.flatnonzero(np.r_[True, day_key[1:] != day_key[:-1]])
    day_id = np.cumsum(np.r_[False, day_key[1:] != day_key[:-1]])
    keys = day_key[starts]
    n_days = len(keys)
    lid = day_id[light]
    # Each day's step: the step most of its records have (a file may switch 30 <-> 60 min).
    if rec.steps is None:
        day_step = np.full(n_days, step, dtype=np.int64)
    else:
        per = np.stack([np.bincount(day_id, weights=rec.steps == s, minlength=n_days)
                        for s in (15, 30, 60)])
        day_step = np.array([15, 30, 60])[np.argmax(per, axis=0)]

    def day_mean(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = values[mask]
        ok = np.isfinite(x)
        ids = day_id[mask][ok]
        cnt = np.bincount(ids, minlength=n_days)
        tot = np.bincount(ids, weights=x[ok], minlength=n_days)
        with np.errstate(invalid="ignore", divide="ignore"):
            return tot / cnt, cnt

    has_light = np.bincount(lid, minlength=n_days) > 0
    rep.days_with_daylight = int(has_light.sum())
    min_count = _day_counts(cfg.min_count, day_step)
    count_cols = list(choice.inputs) + ([USTAR] if USTAR in v else [])
    means: dict[str, np.ndarray] = {}
    keep = has_light.copy()
    for c in count_cols:
        m, cnt = day_mean(v[c], light)
        means[c] = m
        bad = has_light & ((cnt < min_count) | ~np.isfinite(m))
        rep.days_dropped_by_column[c] = int((bad & keep).sum())
        keep &= ~bad
    rep.days_kept = int(keep.sum())
    if rep.days_kept == 0:
        worst = max(rep.days_dropped_by_column, key=rep.days_dropped_by_column.get)
        raise UserError(
            f"{path}: no day has >= {_scaled(cfg.min_count, step)} valid daylight records of "
            f"every input; {worst} alone removed {rep.days_dropped_by_column[worst]} of "
            f"{rep.days_with_daylight} days (check the column, or lower min_count)"
        )

    # NEE: daylight (or peak-hours) mean, missing with too few valid records.
    nee = v[choice.target].copy()
    if use_ustar and cfg.ustar_mode == "drop":
        nee[v[USTAR] <= cfg.ustar_threshold] = np.nan
    if cfg.nee_mode == "peak":
        # DLFM: records starting 09:00 to 11:30 (hours 9, 10 and 11: 6 half-hours).
        hhmm = rec.timestamp % 10000
        nee_mask = light & (hhmm >= 900) & (hhmm < 1200)
        nee_min = _day_counts(cfg.nee_min_count or 3, day_step)
    else:
        nee_mask = light
        nee_min = _day_counts(cfg.nee_min_count or 9, day_step)
    nee_mean, nee_cnt = day_mean(nee, nee_mask)
    few = nee_cnt < nee_min
    rep.nee_missing_count = int((keep & few).sum())
    nee_mean[few] = np.nan
    if use_ustar and cfg.ustar_mode == "na":
        low = means[USTAR] <= cfg.ustar_threshold
        rep.nee_missing_ustar = int((keep & low & ~few).sum())
        nee_mean[low] = np.nan
        rep.ustar_rule = f"daily mean daylight USTAR <= {cfg.ustar_threshold:g}"
    elif use_ustar and cfg.ustar_mode == "drop":
        rep.ustar_rule = f"records with USTAR <= {cfg.ustar_threshold:g} dropped before averaging"
    elif use_ustar:
        rep.ustar_rule = (f"records with USTAR <= {cfg.ustar_threshold:g} or missing dropped, "
                          f"drivers too (DLFM drop)")
    else:
        rep.ustar_rule = "USTAR rule off" if cfg.ustar_mode == "off" else "no USTAR column"
        if USTAR not in v:
            rep.notes.append("no USTAR column: friction-velocity filter not applied")

    cols = list(choice.inputs) + ([USTAR] if USTAR in v else [])
    frame = pd.DataFrame({c: means[c][keep] for c in cols}, index=_day_dates(keys[keep]))
    if _dlfm_snow(rec, cfg):
        frame[_SNOW_DAILY] = day_mean(v[SNOW], light)[0][keep]
        cols.append(_SNOW_DAILY)
    frame["NEE"] = nee_mean[keep]
    frame.index.name = "DAY"
    if cfg.interpolate_single_gaps:
        frame = _fill_single_gaps(frame, cols, rep)
    return frame


def _dlfm_snow(rec: FluxRecords, cfg: PrepareConfig) -> bool:
    return cfg.season_from_snow and cfg.snow_season == "dlfm" and SNOW in rec.values


def _fill_single_gaps(frame: pd.DataFrame, drivers: list[str], rep: FilterReport) -> pd.DataFrame:
    """Insert each missing day that has kept days on both sides; drivers interpolated linearly.

    NEE is never interpolated: the inserted day only makes windows continuous.
    """
    day = frame.index.values.astype("datetime64[D]").astype(np.int64)
    gap = np.flatnonzero(np.diff(day) == 2)  # exactly one missing day between i and i+1
    rep.single_gaps_filled = len(gap)
    if len(gap) == 0:
        return frame
    a = frame.iloc[gap]
    b = frame.iloc[gap + 1]
    fill = pd.DataFrame(
        {c: (a[c].to_numpy() + b[c].to_numpy()) / 2.0 for c in drivers},
        index=pd.DatetimeIndex((day[gap] + 1).astype("datetime64[D]"), name="DAY"),
    )
    fill["NEE"] = np.nan
    return pd.concat([frame, fill]).sort_index()


def season_years(
    days: pd.DatetimeIndex, rec: FluxRecords, cfg: PrepareConfig, rep: FilterReport,
    snow_daily: np.ndarray | None = None,
) -> np.ndarray:
    """Season year of each day.

    With D_SNOW (and ``season_from_snow``), ``snow_season`` picks the rule:

    - "any-record": a season year Y starts the day after the last snow-covered day of spring
      (any record with D_SNOW > 0 before 1 July) of calendar year Y; a spring without snow
      starts on 1 January.
    - "dlfm": the DLFM code's rule, on ``snow_daily`` (the daylight-mean D_SNOW of the table's
      days): Y starts on the table day after the last Jan-Jun day with D_SNOW > 0; without
      one, on the table day after Y's first Jul-Dec day (a snow-free spring starts the year
      in July); a year with neither stays in the previous season year; days before the first
      start belong to the first calendar year.

    Without D_SNOW: calendar years, or years starting on the first day of
    ``season_start_month``, labelled by the calendar year they start in. Partial first and last
    years are just shorter years.
    """
    years = days.year.to_numpy()
    if snow_daily is not None:
        return _dlfm_season_years(days, snow_daily, rep)
    if cfg.season_from_snow and SNOW in rec.header.columns:
        snow_days = _snow_days(rec)
        if len(snow_days):
            start = {}
            for y in np.unique(years):
                spring = snow_days[(snow_days.year == y) & (snow_days.month < 7)]
                start[y] = (spring.max() + pd.Timedelta(days=1)) if len(spring) else None
            out = years.copy()
            for y, s in start.items():
                if s is not None:
                    out[(years == y) & (days < s)] = y - 1
            rep.season_rule = "from D_SNOW: each year starts after the last spring snow day"
            return out
        rep.notes.append("D_SNOW present but never > 0: calendar season years")
    if cfg.season_start_month == 1:
        rep.season_rule = "calendar years"
        return years
    rep.season_rule = f"years starting on the 1st of month {cfg.season_start_month}"
    return np.where(days.month.to_numpy() >= cfg.season_start_month, years, years - 1)


def _dlfm_season_years(days: pd.DatetimeIndex, snow: np.ndarray, rep: FilterReport) -> np.ndarray:
    """The DLFM season years (see :func:`season_years`), on table rows in day order."""
    years = days.year.to_numpy()
    months = days.month.to_numpy()
    out = np.full(len(days), years.min() if len(days) else 0, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        snowy = snow > 0
    for y in np.unique(years):
        idx = np.flatnonzero(years == y)
        spring = idx[months[idx] <= 6]
        spring_snow = spring[snowy[spring]]
        summer = idx[months[idx] >= 7]
        if len(spring_snow):
            last = spring_snow[-1]
        elif len(summer):
            last = summer[0]
        else:
            continue  # no snow and no day after June (a partial last year): no new season
        out[last + 1:] = y
    rep.season_rule = ("from D_SNOW, DLFM rule: each year starts after the last spring day "
                       "with daylight-mean snow (snow-free spring: after the first July day)")
    return out


def _snow_days(rec: FluxRecords) -> pd.DatetimeIndex:
    """Days with snow on the ground (any record with D_SNOW > 0)."""
    snow = rec.values.get(SNOW)
    if snow is None:
        return pd.DatetimeIndex([])
    keys = np.unique(rec.timestamp[snow > 0] // 10000)
    return _day_dates(keys)

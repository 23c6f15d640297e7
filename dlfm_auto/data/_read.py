"""Reading AmeriFlux BASE and FLUXNET files.

The header is read first (cheap), the columns are resolved against it, and only the needed
columns are then parsed: US-Tw3 has 50 columns, a model uses five. Timestamps stay integers
(``YYYYMMDDHHMM``) because the daily aggregation only needs the day key and the time of day;
converting 260k strings to datetimes costs more than the rest of the pipeline.

Everything a file may get wrong is checked here, each in one place: the encoding and separator
(:func:`read_header`), timestamps (:func:`_check_stamps`: valid calendar times, no isolated
far-off dates), numbers (:func:`_to_float`: text cells become missing and are counted),
duplicates (:func:`_drop_duplicates`), physical ranges (:mod:`._ranges`) and the time step of
every record (:func:`_record_steps`).
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dlfm_auto._errors import UserError
from dlfm_auto.data._ranges import mask_implausible

MISSING = -9999
_NA = ["-9999", "-9999.0", "-9999.00", "NA", "NaN", "nan", ""]
_SEPARATORS = (",", ";", "\t")
STEPS = (15, 30, 60)  # supported sub-daily steps, minutes
#: A block of at most _FAR_SMALL_DAYS days, more than a year from the rest, is a date typo.
_FAR_GAP_DAYS = 366
_FAR_SMALL_DAYS = 31


@dataclass(frozen=True)
class FluxHeader:
    """What a file is, learnt from its first lines."""

    path: Path
    columns: tuple[str, ...]
    format: str  # "sub-daily" (TIMESTAMP_START) or "daily" (TIMESTAMP)
    site: str | None
    header_line: int  # 0-based physical line number of the header row
    encoding: str = "utf-8-sig"  # "latin-1" when the header is not UTF-8
    sep: str = ","


@dataclass(frozen=True)
class FluxRecords:
    """Parsed records: numeric columns + integer timestamps (``YYYYMMDDHHMM``)."""

    header: FluxHeader
    timestamp: np.ndarray  # int64 YYYYMMDDHHMM (daily files: HHMM = 0000), sorted, unique
    values: dict[str, np.ndarray]  # float64, NaN = missing
    step_minutes: int  # the most common step: 15, 30, 60 or 1440
    steps: np.ndarray | None = None  # int64 step of each record's run (sub-daily files)
    non_numeric: dict[str, int] = field(default_factory=dict)  # text cells read as missing
    implausible: dict[str, int] = field(default_factory=dict)  # values outside physical range
    notes: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return int(self.timestamp.shape[0])


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def file_sha256(path: Path) -> str:
    """Content hash of the file as stored (gzip bytes for .gz): identifies the data."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decode(raw: bytes) -> tuple[str, bool]:
    """UTF-8 (a BOM is dropped), else Latin-1, which decodes any byte: (text, was_utf8)."""
    try:
        return raw.decode("utf-8-sig"), True
    except UnicodeDecodeError:
        return raw.decode("latin-1"), False


def read_header(path: str | Path) -> FluxHeader:
    """Find the header row (after ``#`` comments and blank lines), separator and format."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"data file not found: {p} (pass --data PATH, or run `demo-data`)")
    if p.is_dir():
        raise UserError(f"data path is a directory, not a file: {p}")
    site = None
    utf8 = True
    try:
        with _open_binary(p) as f:
            for i, raw in enumerate(f):  # noqa: B007 (i is the header line after the loop)
                if b"\x00" in raw:
                    raise UserError(f"{p} is not a text file in UTF-8 or Latin-1 (NUL bytes; "
                                    f"UTF-16 or binary?): save it as UTF-8 CSV")
                line, ok = _decode(raw if i else raw.removeprefix(b"\xef\xbb\xbf"))
                utf8 &= ok
                s = line.strip()
                if not s:
                    continue
                if s.startswith("#"):
                    low = s.lstrip("#").strip()
                    if low.lower().startswith("site:"):
                        site = low.split(":", 1)[1].strip() or None
                    continue
                sep = next((c for c in _SEPARATORS if c in s), ",")
                cols = tuple(c.strip().strip('"').strip() for c in s.split(sep))
                break
            else:
                raise UserError(f"{p} is empty: no header row found")
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"cannot read {p}: {e}") from None
    if "TIMESTAMP_START" in cols:
        fmt = "sub-daily"
    elif "TIMESTAMP" in cols:
        fmt = "daily"
    else:
        shown = ", ".join(cols[:8]) + (" ..." if len(cols) > 8 else "")
        raise UserError(
            f"{p} is not an AmeriFlux/FLUXNET file: no TIMESTAMP_START or TIMESTAMP column "
            f"(header: {shown})"
        )
    if site is None:  # FLUXNET names: FLX_FR-Pue_..., AMF_US-Tw3_...
        parts = p.name.split("_")
        if len(parts) > 1 and parts[0] in {"FLX", "AMF"}:
            site = parts[1]
        elif "-" in parts[0] and len(parts[0]) == 6:
            site = parts[0]
    return FluxHeader(p, cols, fmt, site, i, "utf-8-sig" if utf8 else "latin-1", sep)


# ---------------------------------------------------------------- timestamps

_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def format_stamp(ts: int) -> str:
    """``YYYYMMDDHHMM`` as ``YYYY-MM-DD HH:MM`` (daily stamps: ``YYYY-MM-DD``)."""
    s = f"{int(ts):012d}"
    day = f"{s[:4]}-{s[4:6]}-{s[6:8]}"
    return day if s[8:] == "0000" else f"{day} {s[8:10]}:{s[10:]}"


def _stamp_ints(raw: pd.Series, fmt: str, col: str, path: Path) -> np.ndarray:
    """The timestamp column as int64 ``YYYYMMDDHHMM``; a non-number names its row."""
    if fmt == "sub-daily" and raw.dtype == np.int64:
        return raw.to_numpy(np.int64)
    s = raw.astype("string").str.strip()
    if fmt == "daily":
        s = s.str.replace("-", "", regex=False)
    num = pd.to_numeric(s, errors="coerce")
    width = 12 if fmt == "sub-daily" else 8
    bad = num.isna() | (s.str.len() != width) | (num % 1 != 0)
    bad = bad.fillna(True).to_numpy(bool)
    if bad.any():
        row = int(np.argmax(bad))
        shape = "YYYYMMDDHHMM" if fmt == "sub-daily" else "YYYYMMDD (or YYYY-MM-DD)"
        raise UserError(f"{path}: {col} must be {shape}; data row {row + 1} has "
                        f"{raw.iloc[row]!s:.40}")
    ts = num.to_numpy(np.float64).astype(np.int64)
    return ts if fmt == "sub-daily" else ts * 10000


def _check_stamps(ts: np.ndarray, col: str, path: Path) -> np.ndarray:
    """Validate calendar times; return minutes since 1970 (int64) for each stamp."""
    y, mo = ts // 10**8, ts // 10**6 % 100
    d, hh, mi = ts // 10**4 % 100, ts // 100 % 100, ts % 100
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    dim = _DAYS_IN_MONTH[np.clip(mo, 1, 12) - 1] + (leap & (mo == 2))
    checks = (
        ((y < 1900) | (y > 9999), "year", y),
        ((mo < 1) | (mo > 12), "month", mo),
        ((d < 1) | (d > dim), "day", d),
        (hh > 23, "hour", hh),
        (mi > 59, "minute", mi),
    )
    for bad, what, part in checks:
        if bad.any():
            r = int(np.argmax(bad))
            raise UserError(f"{path}: {col} in data row {r + 1} is not a valid date/time: "
                            f"{int(ts[r])} has {what} {int(part[r])}")
    months = (y - 1970) * 12 + (mo - 1)
    days = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + d - 1
    return days * 1440 + hh * 60 + mi


def _check_far_off(minutes: np.ndarray, ts: np.ndarray, rows: np.ndarray, path: Path) -> None:
    """Refuse future dates and small blocks of records years away from the rest (typos).

    A one-day "year typo" (2909 in a 2007-2012 file) would otherwise become a season year of
    its own, and the last one is a held-out evaluation year. ``minutes`` is sorted.
    """
    today = (_dt.datetime.now(_dt.UTC).date() - _dt.date(1970, 1, 1)).days
    future = minutes // 1440 > today + 1
    if future.any():
        k = int(np.argmax(future))
        raise UserError(f"{path}: data row {int(rows[k]) + 1} is dated {format_stamp(ts[k])}, "
                        f"in the future: a typo? fix or remove it")
    days = minutes // 1440
    gaps = np.flatnonzero(np.diff(days) > _FAR_GAP_DAYS)
    if len(gaps) == 0:
        return
    bounds = np.r_[0, gaps + 1, len(days)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        span = np.unique(days[a:b]).size
        if span <= _FAR_SMALL_DAYS and (b - a) < len(days) / 2:
            k = a
            rest = np.r_[days[:a], days[b:]]
            yrs = abs(int(rest[np.argmin(np.abs(rest - days[k]))]) - int(days[k])) / 365.25
            rest_ts = np.r_[ts[:a], ts[b:]]
            first, last = format_stamp(rest_ts[0])[:10], format_stamp(rest_ts[-1])[:10]
            raise UserError(
                f"{path}: data row {int(rows[k]) + 1} is dated {format_stamp(ts[k])}, "
                f"{yrs:.0f} years from the rest of the record ({first} .. {last}): "
                f"a date typo? fix or remove it"
            )


# ---------------------------------------------------------------- numbers


def _to_float(col: pd.Series, name: str, path: Path) -> tuple[np.ndarray, int]:
    """A column as float64 (NaN = missing) and how many text cells became missing.

    pandas 3 reads a column with one text cell as ``str`` (not ``object``) dtype, so the test
    is "not numeric", never "is object". A column that is mostly text is refused: it is the
    wrong column, not a column with a few typos.
    """
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        v = np.array(col.to_numpy(np.float64, na_value=np.nan))
        n_text = 0
    else:
        s = col.astype("string").str.strip()
        num = pd.to_numeric(s, errors="coerce")
        text = (s.notna() & num.isna()).fillna(False).to_numpy(bool)
        n_text = int(text.sum())
        filled = int(s.notna().sum())
        if n_text and n_text * 2 > filled:
            example = s[text].iloc[0]
            raise UserError(f"{path}: column {name} is mostly text ({n_text} of {filled} cells "
                            f"are not numbers, e.g. {example!r:.30}); is it the right column?")
        v = np.array(num.to_numpy(np.float64, na_value=np.nan))
    with np.errstate(invalid="ignore"):
        v[~np.isfinite(v) | (v <= MISSING)] = np.nan  # -9999 written as a float, or worse
    return v, n_text


def _drop_duplicates(
    ts: np.ndarray, values: dict[str, np.ndarray], path: Path
) -> tuple[np.ndarray, int]:
    """Keep-mask for sorted records: identical repeats dropped, conflicting ones refused."""
    dup = np.r_[False, ts[1:] == ts[:-1]]
    if not dup.any():
        return np.ones(len(ts), bool), 0
    i = np.flatnonzero(dup)
    conflict = np.zeros(len(i), bool)
    for v in values.values():
        a, b = v[i], v[i - 1]
        conflict |= ~((a == b) | (np.isnan(a) & np.isnan(b)))
    if conflict.any():
        n = len(np.unique(ts[i[conflict]]))
        raise UserError(
            f"{path}: timestamp {format_stamp(ts[i[conflict][0]])} appears more than once with "
            f"different values ({n} such timestamp{'s' if n > 1 else ''}): remove the duplicates"
        )
    return ~dup, int(dup.sum())


def _record_steps(minutes: np.ndarray) -> tuple[np.ndarray, int]:
    """The step of each record's run and the most common step, read from the data.

    A record's step is the smaller of its spacings to the previous and next record, when that
    is a supported step; otherwise (an isolated record beside a gap) the file's common step.
    A file that switches from 30- to 60-min records mid-way thus gets the right step on each
    side of the switch.
    """
    d = np.diff(minutes)
    if len(d) == 0:
        raise UserError("cannot infer the time step: fewer than two distinct timestamps")
    ok = np.isin(d, STEPS)
    if not ok.any():
        med = int(np.median(d))
        raise UserError(f"unsupported time step of {med} minutes (expected 30 or 60)")
    common = int(STEPS[int(np.argmax([np.sum(d[ok] == s) for s in STEPS]))])
    if np.sum(ok) < len(d) / 2:
        med = int(np.median(d))
        raise UserError(f"unsupported time step of {med} minutes (expected 30 or 60)")
    big = np.iinfo(np.int64).max
    dd = np.where(ok, d, big)
    prev = np.r_[big, dd]
    nxt = np.r_[dd, big]
    step = np.minimum(prev, nxt)
    step[step == big] = common
    return step, common


# ---------------------------------------------------------------- reading


def _read(header: FluxHeader, ts_col: str, wanted: list[str], ts_type: type,
          encoding: str) -> pd.DataFrame:
    cols = list(header.columns)
    names = [ts_col, *wanted]
    dup = [c for c in names if cols.count(c) > 1]
    if dup:  # an unused repeated name is harmless; a used one is ambiguous
        raise UserError(f"{header.path}: column {dup[0]} appears {cols.count(dup[0])} times in "
                        f"the header: which one is meant?")
    idx = [cols.index(c) for c in names]
    try:
        df = pd.read_csv(
            header.path,
            skiprows=header.header_line + 1,
            header=None,
            sep=header.sep,
            comment="#",
            usecols=idx,
            dtype={cols.index(ts_col): ts_type},
            na_values=_NA,
            keep_default_na=False,
            skip_blank_lines=True,
            skipinitialspace=True,
            encoding=encoding,
            engine="c",
            low_memory=False,  # one dtype per column: no DtypeWarning on a text cell
        )
    except UnicodeDecodeError:
        if encoding == "latin-1":
            raise
        return _read(header, ts_col, wanted, ts_type, "latin-1")
    except ValueError as e:
        if ts_type is not str:
            raise
        raise UserError(f"cannot parse {header.path}: malformed CSV ({e})") from None
    except (OSError, EOFError, pd.errors.ParserError) as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot parse {header.path}: {msg}") from None
    return df.rename(columns={i: cols[i] for i in idx})


def read_records(header: FluxHeader, columns: list[str]) -> FluxRecords:
    """Parse the timestamp column and ``columns`` (already checked to exist) as floats."""
    ts_col = "TIMESTAMP_START" if header.format == "sub-daily" else "TIMESTAMP"
    wanted = [c for c in dict.fromkeys(columns) if c != ts_col]
    path = header.path
    # Integer timestamps parse 10x faster than strings; fall back to strings only to
    # report a malformed timestamp (or for daily "YYYY-MM-DD" stamps).
    df = None
    if header.format == "sub-daily":
        try:
            df = _read(header, ts_col, wanted, np.int64, header.encoding)
        except ValueError:
            df = None
    if df is None:
        df = _read(header, ts_col, wanted, str, header.encoding)
    if len(df) == 0:
        raise UserError(f"{path} has a header but no data rows")
    ts = _stamp_ints(df[ts_col], header.format, ts_col, path)
    minutes = _check_stamps(ts, ts_col, path)
    values: dict[str, np.ndarray] = {}
    non_numeric: dict[str, int] = {}
    for c in wanted:
        values[c], n = _to_float(df[c], c, path)
        if n:
            non_numeric[c] = n
    rows = np.arange(len(ts))
    if np.any(np.diff(ts) < 0):
        order = np.argsort(ts, kind="stable")
        ts, minutes, rows = ts[order], minutes[order], rows[order]
        values = {c: v[order] for c, v in values.items()}
    notes = []
    keep, n_dup = _drop_duplicates(ts, values, path)
    if n_dup:
        ts, minutes, rows = ts[keep], minutes[keep], rows[keep]
        values = {c: v[keep] for c, v in values.items()}
        notes.append(f"{n_dup} duplicated record(s) (same timestamp, same values in the "
                     f"columns used) dropped")
    _check_far_off(minutes, ts, rows, path)
    implausible = mask_implausible(values)
    if header.format == "daily":
        return FluxRecords(header, ts, values, 1440, None, non_numeric, implausible,
                           tuple(notes))
    steps, common = _record_steps(minutes)
    other = steps != common
    if other.any():
        days = np.unique(ts[other] // 10000).size
        kinds = ", ".join(f"{int(s)}-min" for s in np.unique(steps[other]))
        notes.append(f"time step changes within the file: {kinds} records on {days} day(s) "
                     f"(mostly {common}-min); daily minimum counts follow each day's step")
    return FluxRecords(header, ts, values, common, steps, non_numeric, implausible,
                       tuple(notes))

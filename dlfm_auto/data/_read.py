"""Reading AmeriFlux BASE and FLUXNET files.

The header is read first (cheap), the columns are resolved against it, and only the needed
columns are then parsed: US-Tw3 has 50 columns, a model uses five. Timestamps stay integers
(``YYYYMMDDHHMM``) because the daily aggregation only needs the day key and the time of day;
converting 260k strings to datetimes costs more than the rest of the pipeline.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dlfm_auto._errors import UserError

MISSING = -9999
_NA = ["-9999", "-9999.0", "-9999.00", "NA", "NaN", "nan", ""]


@dataclass(frozen=True)
class FluxHeader:
    """What a file is, learnt from its first lines."""

    path: Path
    columns: tuple[str, ...]
    format: str  # "sub-daily" (TIMESTAMP_START) or "daily" (TIMESTAMP)
    site: str | None
    header_line: int  # 0-based physical line number of the header row


@dataclass(frozen=True)
class FluxRecords:
    """Parsed records: numeric columns + integer timestamps (``YYYYMMDDHHMM``)."""

    header: FluxHeader
    timestamp: np.ndarray  # int64 YYYYMMDDHHMM (daily files: HHMM = 0000)
    values: dict[str, np.ndarray]  # float64, NaN = missing
    step_minutes: int  # 30, 60 or 1440

    @property
    def n_rows(self) -> int:
        return int(self.timestamp.shape[0])


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")  # noqa: SIM115


def file_sha256(path: Path) -> str:
    """Content hash of the file as stored (gzip bytes for .gz): identifies the data."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_header(path: str | Path) -> FluxHeader:
    """Find the header row (after ``#`` comments and blank lines) and the file format."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"data file not found: {p} (pass --data PATH, or run `demo-data`)")
    if p.is_dir():
        raise UserError(f"data path is a directory, not a file: {p}")
    site = None
    try:
        with _open_text(p) as f:
            for i, line in enumerate(f):  # noqa: B007 (i is the header line after the loop)
                s = line.strip()
                if not s:
                    continue
                if s.startswith("#"):
                    low = s.lstrip("#").strip()
                    if low.lower().startswith("site:"):
                        site = low.split(":", 1)[1].strip() or None
                    continue
                cols = tuple(c.strip().strip('"') for c in s.split(","))
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
    return FluxHeader(p, cols, fmt, site, i)


def _parse_timestamps(raw: pd.Series, fmt: str, path: Path) -> np.ndarray:
    if fmt == "sub-daily":
        if raw.dtype == np.int64:
            ts = raw
        else:
            ts = pd.to_numeric(raw, errors="coerce")
        bad = ts.isna() | (ts < 1e11) | (ts > 1e12)
        if bad.any():
            first = raw[bad].iloc[0]
            raise UserError(
                f"{path}: TIMESTAMP_START must be YYYYMMDDHHMM; row {int(bad.idxmax()) + 1} "
                f"has {first!r}"
            )
        return ts.to_numpy(np.int64)
    s = raw.astype(str).str.replace("-", "", regex=False)
    ts = pd.to_numeric(s, errors="coerce")
    bad = ts.isna() | (ts < 1e7) | (ts > 1e8)
    if bad.any():
        raise UserError(f"{path}: TIMESTAMP must be YYYYMMDD; found {raw[bad].iloc[0]!r}")
    return ts.to_numpy(np.int64) * 10000


def _step_minutes(ts: np.ndarray, fmt: str) -> int:
    """The time step, read from the data (the median spacing of the first records)."""
    if fmt == "daily":
        return 1440
    sample = ts[: min(len(ts), 2000)]
    dt = pd.to_datetime(sample.astype(str), format="%Y%m%d%H%M")
    diffs = np.diff(dt.values).astype("timedelta64[m]").astype(np.int64)
    diffs = diffs[diffs > 0]
    if len(diffs) == 0:
        raise UserError("cannot infer the time step: fewer than two distinct timestamps")
    step = int(np.median(diffs))
    if step not in (15, 30, 60):
        raise UserError(f"unsupported time step of {step} minutes (expected 30 or 60)")
    return step


def _read(header: FluxHeader, ts_col: str, wanted: list[str], ts_type: type) -> pd.DataFrame:
    try:
        return pd.read_csv(
            header.path,
            skiprows=header.header_line,
            comment="#",
            usecols=[ts_col, *wanted],
            dtype={ts_col: ts_type},
            na_values=_NA,
            keep_default_na=False,
            skip_blank_lines=True,
            engine="c",
        )
    except ValueError:
        if ts_type is not str:
            raise
        raise UserError(f"cannot parse {header.path}: malformed CSV") from None
    except (OSError, EOFError, pd.errors.ParserError) as e:
        raise UserError(f"cannot parse {header.path}: {e}") from None


def read_records(header: FluxHeader, columns: list[str]) -> FluxRecords:
    """Parse the timestamp column and ``columns`` (already checked to exist) as floats."""
    ts_col = "TIMESTAMP_START" if header.format == "sub-daily" else "TIMESTAMP"
    wanted = list(dict.fromkeys(columns))
    # Integer timestamps parse 10x faster than strings; fall back to strings only to
    # report a malformed timestamp (or for daily "YYYY-MM-DD" stamps).
    df = None
    if header.format == "sub-daily":
        try:
            df = _read(header, ts_col, wanted, np.int64)
        except ValueError:
            df = None
    if df is None:
        df = _read(header, ts_col, wanted, str)
    if len(df) == 0:
        raise UserError(f"{header.path} has a header but no data rows")
    ts = _parse_timestamps(df[ts_col], header.format, header.path)
    order = None
    if np.any(np.diff(ts) < 0):
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
    values: dict[str, np.ndarray] = {}
    for c in wanted:
        col = df[c]
        if col.dtype == object:
            col = pd.to_numeric(col, errors="coerce")
        v = np.array(col.to_numpy(np.float64, na_value=np.nan))
        v[v <= MISSING] = np.nan  # -9999 written as a float, or worse
        values[c] = v if order is None else v[order]
    return FluxRecords(header, ts, values, _step_minutes(ts, header.format))

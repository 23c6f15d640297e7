"""``prepare(config) -> Dataset``: the one entry point, with two caches.

Trials must never redo data preparation. The daily table (the expensive part: parsing and
aggregating ~260k records) is cached in memory per process and on disk keyed by the file's
SHA-256 and the aggregation settings, so parallel worker processes share it; windows are cheap
array views and are cached in memory per (file, settings).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

from dlfm_auto._errors import UserError
from dlfm_auto._io import atomic_write_bytes
from dlfm_auto.data._columns import LIGHT_COLUMNS, SNOW, USTAR, ColumnChoice, resolve_columns
from dlfm_auto.data._config import PrepareConfig
from dlfm_auto.data._daily import aggregate_daily, dd_qc_column
from dlfm_auto.data._dataset import Dataset, SourceInfo, drop_constant, plan_years
from dlfm_auto.data._read import file_sha256, read_header, read_records
from dlfm_auto.data._sites import prepare_sites
from dlfm_auto.data._windows import (
    build_calendar,
    fill_short_gaps,
    longest_valid_run,
    valid_targets,
    windows,
)

_CACHE_VERSION = 1
#: What the daily target holds: a daylight mean of a half-hourly flux, or FLUXNET DD's daily sum.
TARGET_UNITS = {"sub-daily": "µmol m-2 s-1", "daily": "gC m-2 d-1"}
_CODE_FILES = ("_read.py", "_ranges.py", "_columns.py", "_daily.py", "_prepare.py", "_config.py")
_CODE_HASH: list[str] = []


def _code_hash() -> str:
    """Hash of the modules that shape the daily table: a code change invalidates the cache."""
    if not _CODE_HASH:
        h = hashlib.sha256()
        for name in _CODE_FILES:
            h.update((Path(__file__).parent / name).read_bytes())
        _CODE_HASH.append(h.hexdigest()[:16])
    return _CODE_HASH[0]
_MEM_DAILY: OrderedDict = OrderedDict()
_MEM_DATASETS: OrderedDict = OrderedDict()
_SHA: dict[tuple, str] = {}
_MAX_ITEMS = 32


def cache_dir() -> Path | None:
    """On-disk cache folder: $DLFM_AUTO_CACHE, or ~/.cache/dlfm_auto; "off" disables it."""
    env = os.environ.get("DLFM_AUTO_CACHE", "")
    if env.lower() == "off":
        return None
    return Path(env) if env else Path.home() / ".cache" / "dlfm_auto"


def clear_caches(disk: bool = False) -> None:
    """Forget cached tables (benchmarks measure cold runs with this)."""
    _MEM_DAILY.clear()
    _MEM_DATASETS.clear()
    _SHA.clear()
    d = cache_dir()
    if disk and d is not None and d.exists():
        for f in d.glob("daily-*.pkl"):
            f.unlink(missing_ok=True)


def _file_id(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def cached_sha256(path: Path) -> str:
    """A file's SHA-256, computed once per (path, size, mtime) in this process."""
    fid = _file_id(path)
    if fid not in _SHA:
        _SHA[fid] = file_sha256(path)
    return _SHA[fid]


def _remember(cache: OrderedDict, key: tuple, value: object) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _MAX_ITEMS:
        cache.popitem(last=False)


def load_daily(cfg: PrepareConfig) -> tuple:
    """(table, report, source) for the config's file and aggregation settings, cached."""
    path = cfg.path
    header = read_header(path)  # also the friendly "file not found" error
    mem_key = (_file_id(path), cfg.daily_key())
    hit = _MEM_DAILY.get(mem_key)
    if hit is not None:
        return hit
    sha = cached_sha256(path)
    disk = cache_dir()
    blob = repr((_CACHE_VERSION, _code_hash(), sha, cfg.daily_key())).encode()
    disk_file = disk / f"daily-{hashlib.sha256(blob).hexdigest()[:24]}.pkl" if disk else None
    if disk_file is not None and disk_file.exists():
        try:
            with open(disk_file, "rb") as f:
                table, report, source = pickle.load(f)
            source = dataclasses.replace(source, path=str(path), name=path.name)
            _remember(_MEM_DAILY, mem_key, (table, report, source))
            return table, report, source
        except Exception:  # a corrupt cache entry is rebuilt, never fatal
            disk_file.unlink(missing_ok=True)

    choice = resolve_columns(header.columns, cfg.target, cfg.columns)
    extra = [c for c in (*LIGHT_COLUMNS, USTAR) if c in header.columns]
    if cfg.season_from_snow and SNOW in header.columns:
        extra.append(SNOW)
    if header.format == "daily":
        extra = [c for c in extra if c == USTAR]
        if dd_qc_column(choice.target) in header.columns:
            extra.append(dd_qc_column(choice.target))
    rec = read_records(header, [*choice.inputs, choice.target, *extra])
    choice, notes = drop_sparse_defaults(rec, choice)
    table, report = aggregate_daily(rec, choice, cfg)
    report.notes[:0] = notes
    source = SourceInfo(
        path=str(path), name=path.name, sha256=sha, size=path.stat().st_size,
        site=header.site, format=header.format, step_minutes=rec.step_minutes,
        target=choice.target, target_source=choice.target_source,
        inputs=choice.inputs, inputs_source=choice.inputs_source,
        target_units=TARGET_UNITS[header.format],
    )
    if disk_file is not None:
        try:
            atomic_write_bytes(disk_file, pickle.dumps((table, report, source),
                                                       protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass  # a read-only cache folder only costs speed
    _remember(_MEM_DAILY, mem_key, (table, report, source))
    return table, report, source


def drop_sparse_defaults(rec, choice: ColumnChoice) -> tuple[ColumnChoice, list[str]]:
    """Leave out default drivers measured in under half as many records as the best one.

    A default set must not silently shrink the record: US-Tw3 logs precipitation only from
    2017, and keeping P would leave two years. Explicit --columns are never changed.
    """
    if choice.inputs_source != "default set":
        return choice, []
    cover = {c: float(np.isfinite(rec.values[c]).mean()) for c in choice.inputs}
    best = max(cover.values())
    keep = tuple(c for c in choice.inputs if cover[c] >= 0.5 * best)
    notes = [
        f"default input {c} left out: valid in {cover[c]:.0%} of records (pass --columns to use it)"
        for c in choice.inputs if c not in keep
    ]
    return dataclasses.replace(choice, inputs=keep), notes


def prepare(cfg: PrepareConfig) -> Dataset:
    """Samples, windows and the split plan for ``cfg`` (cached; see module docstring).

    Several files (one site each) give one pooled dataset (``data/_sites.py``).
    """
    files = (*cfg.paths, *((Path(cfg.site_info),) if cfg.site_info else ()))
    key = (tuple(_file_id(p) if p.exists() else None for p in files), cfg)
    hit = _MEM_DATASETS.get(key)
    if hit is not None:
        return hit
    if cfg.multi_site:
        ds = prepare_sites(cfg, prepare)
        _remember(_MEM_DATASETS, key, ds)
        return ds
    table, report, source = load_daily(cfg)
    cal = build_calendar(
        table, source.inputs, doy=cfg.doy, stats_window=cfg.stats_window, lag_nee=cfg.lag_nee
    )
    feats, names, msgs = drop_constant(cal.features, cal.feature_names)
    cal = dataclasses.replace(cal, features=feats, feature_names=names)
    L = cfg.sequence_length
    measured = np.isfinite(cal.features).all(axis=1)
    cal = fill_short_gaps(cal, cfg.window_gap_days)
    targets = valid_targets(cal, max(L, cfg.match_length or L), measured)
    if not targets.any():
        run = longest_valid_run(cal)
        raise UserError(
            f"sequence_length={max(L, cfg.match_length or L)} leaves no samples: the longest "
            f"run of consecutive days with every input is {run} days"
        )
    filled = int((~measured & np.isfinite(cal.features).all(axis=1)).sum())
    if filled:
        msgs.append(f"window_gap_days={cfg.window_gap_days}: drivers of {filled} missing days "
                    "interpolated inside windows (never targets; NEE never interpolated)")
    X = windows(cal, L, targets)
    ds = Dataset(
        config=cfg, source=source, table=table, report=report, X=X,
        y=cal.nee[targets], days=cal.days[targets], season_year=cal.season_year[targets],
        feature_names=names, messages=list(msgs),
    )
    if np.any(ds.season_year < 0):  # cannot happen: targets are table days
        raise AssertionError("sample without season year")
    plan_years(ds)
    _remember(_MEM_DATASETS, key, ds)
    return ds

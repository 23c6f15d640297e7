"""Several sites in one dataset: one file per site, pooled samples, per-site provenance.

Each file is prepared on its own, exactly as a one-site study would prepare it (its own target
resolution, time step, season years, filter report and held-out last years), then the samples
are pooled. The pooled :class:`~dlfm_auto.data._dataset.Dataset` knows each sample's site, so
its folds can be season years pooled over sites (``cv="years"``) or whole sites
(``cv="sites"``, leave one site out), and each site's held-out years stay out of every fold.

Two optional inputs are a site's own and never its NEE: static site features from a CSV
(``site_info``), appended to every day of a window, and per-site driver standardisation
(``site_norm``), which scales each site's drivers by that site's training-year statistics, so
a model sees "warm for this site" rather than "warm". Both are known for a site whose NEE has
never been measured, which is the case leave-one-site-out imitates.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from dlfm_auto._errors import UserError
from dlfm_auto.data._config import PrepareConfig
from dlfm_auto.data._dataset import Dataset, SourceInfo, min_val_samples
from dlfm_auto.data._read import file_sha256

#: Feature names of static site features start with this (baselines leave them out).
STATIC_PREFIX = "site:"
#: Inputs a site's own standardisation leaves alone: the calendar and NEE itself.
_NOT_SCALED = ("DOY", "NEE_lag1")


def site_name(src: SourceInfo) -> str:
    """A site's name: the file's ``# Site:`` line, else the file name up to its first dot."""
    return src.site or Path(src.name).name.split(".")[0]


def combined_sha256(shas: list[str]) -> str:
    """One hash for an ordered list of file hashes (a study's identity over its files)."""
    return hashlib.sha256("\n".join(shas).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class SiteInfo:
    """Static site features read from ``--site-info``: one row of numbers per site."""

    path: str
    sha256: str
    names: tuple[str, ...]  # feature names, "site:<column>" or "site:<column>=<class>"
    values: dict[str, np.ndarray]  # site -> (len(names),) float64


def read_site_info(path: str, sites: tuple[str, ...]) -> SiteInfo:
    """Parse and check the site-features CSV once, for the study's ``sites``.

    Numeric columns are used as they are; any other column is categorical and becomes one 0/1
    feature per class present among the study's sites (IGBP "DBF", "ENF", ...). Every study
    site needs a row, with no empty cell; rows of other sites are ignored.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--site-info {path}: no such file")
    try:
        t = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise UserError(f"--site-info {path}: not a readable CSV ({str(e).splitlines()[0]})"
                        ) from None
    t.columns = [c.strip() for c in t.columns]
    if "site" not in t.columns:
        raise UserError(f"--site-info {path}: needs a 'site' column (columns: "
                        f"{', '.join(t.columns) or 'none'})")
    t["site"] = t["site"].str.strip()
    dup = sorted(set(t["site"][t["site"].duplicated()]))
    if dup:
        raise UserError(f"--site-info {path}: site listed twice: {', '.join(dup)}")
    missing = [s for s in sites if s not in set(t["site"])]
    if missing:
        raise UserError(f"--site-info {path}: no row for site {', '.join(missing)} (rows: "
                        f"{', '.join(t['site'][:8])})")
    rows = t.set_index("site").loc[list(sites)]
    cols = [c for c in rows.columns if c]
    if not cols:
        raise UserError(f"--site-info {path}: no feature column besides 'site'")
    names: list[str] = []
    blocks: list[np.ndarray] = []
    for c in cols:
        raw = rows[c].str.strip()
        empty = [s for s, v in raw.items() if v == ""]
        if empty:
            raise UserError(f"--site-info {path}: column {c!r} is empty for site "
                            f"{', '.join(empty)}")
        num = pd.to_numeric(raw, errors="coerce")
        if num.notna().all():
            names.append(f"{STATIC_PREFIX}{c}")
            blocks.append(num.to_numpy(np.float64)[:, None])
        else:
            classes = sorted(set(raw))
            names += [f"{STATIC_PREFIX}{c}={k}" for k in classes]
            blocks.append(np.stack([(raw == k).to_numpy(np.float64) for k in classes], axis=1))
    table = np.concatenate(blocks, axis=1)
    return SiteInfo(str(p), file_sha256(p), tuple(names),
                    {s: table[i] for i, s in enumerate(sites)})


def _per_site(cfg: PrepareConfig, one: Callable[[PrepareConfig], Dataset],
              columns: tuple[str, ...] | None) -> list[Dataset]:
    out = []
    for path in cfg.paths:
        sub = cfg.single_site(path)
        if columns is not None:
            sub = sub.replace(columns=columns)
        try:
            out.append(one(sub))
        except UserError as e:
            raise UserError(f"site file {path.name}: {e}") from None
    return out


def _check_files(cfg: PrepareConfig) -> None:
    seen: dict[Path, str] = {}
    for p in cfg.paths:
        key = p.resolve() if p.exists() else p
        if key in seen:
            raise UserError(f"the same file twice in --data: {seen[key]} and {p}")
        seen[key] = str(p)


def _check_sites(parts: list[Dataset]) -> tuple[str, ...]:
    names = tuple(site_name(d.source) for d in parts)
    for i, n in enumerate(names):
        j = names.index(n)
        if j != i:
            raise UserError(f"the same site twice: {n} ({parts[j].source.name} and "
                            f"{parts[i].source.name}); give each site once")
    shas = [d.source.sha256 for d in parts]
    for i, s in enumerate(shas):
        j = shas.index(s)
        if j != i:
            raise UserError(f"the same data twice: {parts[j].source.name} and "
                            f"{parts[i].source.name} have identical content")
    first = parts[0].feature_names
    for n, d in zip(names, parts, strict=True):
        if d.feature_names != first:
            raise UserError(f"site {n} has inputs {', '.join(d.feature_names)}, site {names[0]} "
                            f"{', '.join(first)}: pass --columns with drivers every site has")
    return names


def _check_kinds(parts: list[Dataset]) -> None:
    """Daily (DD) and sub-daily files hold different quantities: never pooled."""
    names = [site_name(d.source) for d in parts]
    kinds = {d.source.format for d in parts}
    if len(kinds) > 1:
        daily = [n for n, d in zip(names, parts, strict=True) if d.source.format == "daily"]
        sub = [n for n, d in zip(names, parts, strict=True) if d.source.format != "daily"]
        raise UserError(
            f"daily (DD) and sub-daily files mixed: {', '.join(daily)} daily (NEE a 24-h sum, "
            f"gC m-2 d-1) and {', '.join(sub)} sub-daily (a daylight mean, µmol m-2 s-1): "
            "not the same quantity; give files of one kind")


def site_driver_stats(d: Dataset) -> tuple[list[float | None], list[float | None]]:
    """A one-site dataset's own training-year mean and sd of each input (None: not scaled).

    Over the last day of each training window (each training day once); held-out years and
    NEE are never used. ``site_norm`` scales by these, and saved ensembles keep them to scale
    a new file of the site the same way.
    """
    train = ~d.heldout
    means: list[float | None] = []
    sds: list[float | None] = []
    for j, name in enumerate(d.feature_names):
        if name in _NOT_SCALED:
            means.append(None)
            sds.append(None)
            continue
        col = d.X[train, -1, j].astype(np.float64)
        sd = float(col.std())
        means.append(float(col.mean()))
        sds.append(sd if sd > 0 else 1.0)
    return means, sds


def scale_by_site(X: np.ndarray, means: list[float | None], sds: list[float | None]
                  ) -> np.ndarray:
    """``X`` (n, L, f) with each scaled input standardised by its site's statistics."""
    X = np.array(X, dtype=np.float32, copy=True)
    for j, (mu, sd) in enumerate(zip(means, sds, strict=True)):
        if mu is not None:
            X[:, :, j] = (X[:, :, j] - mu) / sd
    return X


def prepare_sites(cfg: PrepareConfig, one: Callable[[PrepareConfig], Dataset]) -> Dataset:
    """The pooled dataset of a multi-site config; ``one`` prepares a single site (cached)."""
    _check_files(cfg)
    parts = _per_site(cfg, one, None)
    _check_kinds(parts)
    messages: list[str] = []
    if cfg.columns is None and len({d.source.inputs for d in parts}) > 1:
        common = tuple(c for c in parts[0].source.inputs
                       if all(c in d.source.inputs for d in parts))
        if not common:
            raise UserError("the sites share no default driver: pass --columns with drivers "
                            "every site has")
        messages.append("default drivers differ between sites: using those every site has, "
                        + ", ".join(common))
        parts = _per_site(cfg, one, common)
    names = _check_sites(parts)
    info = read_site_info(cfg.site_info, names) if cfg.site_info else None
    Xs = []
    site_inputs: dict[str, dict] = {}
    for name, d in zip(names, parts, strict=True):
        X = d.X
        entry: dict = {}
        if cfg.site_norm:
            entry["mean"], entry["std"] = site_driver_stats(d)
            X = scale_by_site(X, entry["mean"], entry["std"])
        if info is not None:
            values = info.values[name]
            entry["static"] = [float(v) for v in values]
            static = np.broadcast_to(values.astype(np.float32), (*X.shape[:2], len(values)))
            X = np.concatenate([X, static], axis=2)
        if entry:
            site_inputs[name] = entry
        Xs.append(np.ascontiguousarray(X, dtype=np.float32))
        messages += [f"{name}: {m}" for m in d.messages]
    srcs = tuple(d.source for d in parts)
    shas = [s.sha256 for s in srcs] + ([info.sha256] if info is not None else [])
    targets = sorted({s.target for s in srcs})
    source = SourceInfo(
        path=";".join(s.path for s in srcs), name=", ".join(s.name for s in srcs),
        sha256=combined_sha256(shas), size=sum(s.size for s in srcs), site=None,
        format=srcs[0].format, step_minutes=min(s.step_minutes for s in srcs),
        target="/".join(targets), target_source="per site",
        inputs=srcs[0].inputs, inputs_source=srcs[0].inputs_source,
        target_units=srcs[0].target_units,
    )
    site = np.concatenate([np.full(len(d.y), i, dtype=np.int64) for i, d in enumerate(parts)])
    heldout = np.concatenate([d.heldout for d in parts])
    ds = Dataset(
        config=cfg, source=source,
        table=pd.concat({n: d.table for n, d in zip(names, parts, strict=True)},
                        names=["SITE", "DAY"]),
        report=parts[0].report, X=np.concatenate(Xs), y=np.concatenate([d.y for d in parts]),
        days=np.concatenate([d.days for d in parts]),
        season_year=np.concatenate([d.season_year for d in parts]),
        feature_names=parts[0].feature_names + (info.names if info is not None else ()),
        messages=messages, site=site, site_names=names, sources=srcs,
        reports=tuple(d.report for d in parts),
        site_eval_years={n: d.eval_years for n, d in zip(names, parts, strict=True)},
        site_inputs=site_inputs,
        heldout_mask=heldout,
    )
    ds.eval_years = tuple(sorted({y for d in parts for y in d.eval_years}))
    _plan_pooled_folds(ds)
    return ds


def _plan_pooled_folds(ds: Dataset) -> None:
    """Fold years pooled over sites (``cv="years"``), or a check that every site can be a
    fold (``cv="sites"``)."""
    need = min_val_samples(ds.config, ds._rule_length)
    train = ~ds.heldout
    if ds.config.cv == "sites":
        for i, name in enumerate(ds.site_names):
            n = int(np.sum(train & (ds.site == i)))
            if n < need:
                raise UserError(f"site {name} has {n} samples in its training years at "
                                f"sequence_length={ds.sequence_length}; leave-one-site-out "
                                f"needs at least {need} (min_val_samples) to score it")
        return
    years, counts = np.unique(ds.season_year[train], return_counts=True)
    ok = [int(y) for y, n in zip(years, counts, strict=True) if n >= need]
    if not ok:
        raise UserError(f"no fold possible: no season year has {need} training samples pooled "
                        "over the sites")
    ds.fold_years = tuple(reversed(ok))
    if len(ok) < ds.config.folds:
        ds.messages.append(f"{len(ok)} fold(s) possible, {ds.config.folds} asked for")

"""Prepared samples and their year splits.

A :class:`Dataset` holds the raw windows of every sample; splits normalise them with
statistics of their own training part only (the DLFM code normalised on all years, held-out
years included, which leaks). Held-out evaluation years are the last season years; folds leave
one training season year out, newest first.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dlfm_auto._errors import UserError
from dlfm_auto.data._config import PrepareConfig
from dlfm_auto.data._daily import FilterReport
from dlfm_auto.data._split import Normalizer, Split


@dataclass(frozen=True)
class SourceInfo:
    """Where the samples came from: enough to recognise the same data again."""

    path: str
    name: str
    sha256: str
    size: int
    site: str | None
    format: str
    step_minutes: int
    target: str
    target_source: str
    inputs: tuple[str, ...]
    inputs_source: str
    #: Units of the target as the samples hold it: daylight means of a sub-daily flux, or a
    #: FLUXNET DD file's 24-h gap-filled daily sum. Reports label their NEE axes with it.
    target_units: str = "µmol m-2 s-1"

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["inputs"] = list(self.inputs)
        return d


def min_val_samples(cfg: PrepareConfig, length: int) -> int:
    """The DLFM minimum validation-year size, 200 - floor(sqrt(80 L)), unless overridden."""
    if cfg.min_val_samples is not None:
        return cfg.min_val_samples
    return 200 - math.floor(math.sqrt(80 * length))


@dataclass
class Dataset:
    """Samples of one (file, settings) pair, plus the split plan."""

    config: PrepareConfig
    source: SourceInfo
    table: pd.DataFrame
    report: FilterReport
    X: np.ndarray  # (n, L, f) float32, raw units
    y: np.ndarray  # (n,) float64
    days: np.ndarray  # (n,) datetime64[D]
    season_year: np.ndarray  # (n,) int64
    feature_names: tuple[str, ...]
    eval_years: tuple[int, ...] = ()
    fold_years: tuple[int, ...] = ()
    messages: list[str] = field(default_factory=list)
    # Several sites (``data/_sites.py``); a one-site dataset leaves these empty.
    site: np.ndarray | None = None  # (n,) int: index into site_names
    site_names: tuple[str, ...] = ()
    sources: tuple[SourceInfo, ...] = ()  # per site; ``source`` then describes them all
    reports: tuple[FilterReport, ...] = ()  # per site
    site_eval_years: dict[str, tuple[int, ...]] = field(default_factory=dict)
    heldout_mask: np.ndarray | None = None  # (n,) bool: each site's own held-out years
    #: Per site, what its inputs depend on: ``static`` features (``site_info``) and, with
    #: ``site_norm``, the ``mean``/``std`` its inputs were scaled by (None: not scaled).
    #: Empty when no input depends on the site. Saved ensembles keep it (``predict``).
    site_inputs: dict[str, dict] = field(default_factory=dict)

    @property
    def multi_site(self) -> bool:
        return self.site is not None

    @property
    def heldout(self) -> np.ndarray:
        """(n,) bool: samples in the held-out evaluation years (of their own site)."""
        if self.heldout_mask is not None:
            return self.heldout_mask
        return np.isin(self.season_year, self.eval_years)

    @property
    def sample_sites(self) -> np.ndarray | None:
        """(n,) site name of each sample, or None for one site."""
        if self.site is None:
            return None
        return np.asarray(self.site_names, dtype=object)[self.site]

    def folds(self, k: int | None = None) -> list[tuple[str, np.ndarray]]:
        """The CV folds as (label, validation mask): held-out years are never in one.

        One site, or several with ``cv="years"``: the first ``folds`` fold years (season years
        pooled over sites), newest first. ``cv="sites"``: every site once, its training years
        as the validation part (leave one site out; ``folds`` is not used).
        """
        train = ~self.heldout
        if self.multi_site and self.config.cv == "sites":
            return [(f"site={name}", train & (self.site == i))
                    for i, name in enumerate(self.site_names)]
        return [(f"val={y}", train & (self.season_year == y))
                for y in self.fold_years[: self.config.folds if k is None else k]]

    @property
    def n_folds(self) -> int:
        if self.multi_site and self.config.cv == "sites":
            return len(self.site_names)
        return min(self.config.folds, len(self.fold_years))

    @property
    def sequence_length(self) -> int:
        return int(self.X.shape[1])

    @property
    def years(self) -> tuple[int, ...]:
        return tuple(int(y) for y in np.unique(self.season_year))

    @property
    def train_years(self) -> tuple[int, ...]:
        return tuple(y for y in self.years if y not in self.eval_years)

    def fingerprint(self) -> str:
        """Hash of the data file and every setting that shapes the samples."""
        blob = json.dumps(
            {"sha256": self.source.sha256, "settings": self.config.settings()},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def inner_mask(self, train: np.ndarray) -> np.ndarray | None:
        """Inner validation part of a fold's training part: its newest season year.

        Whatever shapes a fold's model (the epoch kept by early stopping, XGBoost's rounds)
        is chosen on this part, never on the fold's validation year, so the fold's score is an
        honest estimate. A whole season year, like the outer folds: it spans the full seasonal
        cycle (a block of days from one season would choose the epoch for that season only),
        and it is contiguous, so autocorrelation leaks across two year edges at most. The
        newest year is the one most like the years scored next; a newest year below the
        fold-size rule (a partial year) gives way to the newest one that meets it. With fewer
        than two training years, or none that meets the rule, there is no inner part: None,
        and the trainer then trains the whole budget (nothing is chosen).
        """
        if self.site is not None:  # several sites: each training site's own newest year
            masks = [self._newest_year(train & (self.site == i))
                     for i in np.unique(self.site[train])]
            masks = [m for m in masks if m is not None]
            return np.logical_or.reduce(masks)[train] if masks else None
        m = self._newest_year(train)
        return None if m is None else m[train]

    def _newest_year(self, part: np.ndarray) -> np.ndarray | None:
        """(n,) mask of the newest season year of ``part`` that meets the fold-size rule
        (None: ``part`` spans under two years, or none meets it)."""
        years, counts = np.unique(self.season_year[part], return_counts=True)
        if len(years) < 2:
            return None
        need = min_val_samples(self.config, self._rule_length)
        ok = [y for y, n in zip(years, counts, strict=True) if n >= need]
        if not ok:
            return None
        return part & (self.season_year == ok[-1])

    @property
    def _rule_length(self) -> int:
        """The L the fold-size rule is applied at: the matched length in matched mode, so fold
        years do not change with L when every L has the same target days."""
        return max(self.sequence_length, self.config.match_length or 0)

    def _split(self, name: str, train: np.ndarray, val: np.ndarray,
               inner: bool = False) -> Split:
        Xtr = self.X[train]
        flat = Xtr.reshape(-1, Xtr.shape[-1]).astype(np.float64)
        mean = flat.mean(axis=0)
        std = flat.std(axis=0)
        # A column constant within this training part only: scale 1, never NaN.
        std = np.where(std > 0, std, 1.0)
        norm = Normalizer(mean, std, self.feature_names)
        vy = tuple(int(y) for y in np.unique(self.season_year[val]))
        sites = self.sample_sites
        return Split(
            name=name,
            X_train=norm.apply(Xtr),
            y_train=self.y[train].astype(np.float32),
            X_val=norm.apply(self.X[val]),
            y_val=self.y[val].astype(np.float32),
            norm=norm,
            val_years=vy,
            train_days=self.days[train],
            val_days=self.days[val],
            inner_val=self.inner_mask(train) if inner else None,
            train_years=self.season_year[train],
            val_sites=None if sites is None else sites[val],
        )

    def cv_splits(self, folds: int | None = None) -> list[Split]:
        """The splits of :meth:`folds`: each fold's validation part against the rest of the
        training years (normalised with that rest only, epoch chosen inside it)."""
        train = ~self.heldout
        return [self._split(name, train & ~val, val, inner=True)
                for name, val in self.folds(folds)]

    def eval_split(self) -> Split:
        """All training years vs the held-out evaluation years (for final reports only)."""
        if not self.eval_years:
            raise UserError("no held-out evaluation years (eval_years=0)")
        ev = self.heldout
        label = f"{self.eval_years[0]}-{self.eval_years[-1]}"
        return self._split(f"eval={label}", ~ev, ev)

    def samples_per_year(self) -> dict[int, int]:
        ys, n = np.unique(self.season_year, return_counts=True)
        return {int(a): int(b) for a, b in zip(ys, n, strict=True)}


def plan_years(ds: Dataset) -> None:
    """Choose held-out years and fold years; say so when the record is short."""
    cfg = ds.config
    per_year = ds.samples_per_year()
    years = sorted(per_year)
    n_eval = cfg.eval_years
    if len(years) < 2 + (1 if n_eval else 0):
        need = "3 (one held-out, two for a fold)" if n_eval else "2"
        raise UserError(
            f"too few years for the folds: {ds.source.name} has samples in "
            f"{len(years)} season year(s) ({', '.join(map(str, years)) or 'none'}) at "
            f"sequence_length={ds.sequence_length}; need at least {need}"
        )
    if n_eval > len(years) - 2:
        reduced = max(1, len(years) - 2) if n_eval else 0
        ds.messages.append(
            f"eval_years reduced from {n_eval} to {reduced}: only {len(years)} season years "
            f"with samples"
        )
        n_eval = reduced
    ds.eval_years = tuple(years[len(years) - n_eval :]) if n_eval else ()
    train = [y for y in years if y not in ds.eval_years]
    need = min_val_samples(cfg, ds._rule_length)
    fold_years = [y for y in reversed(train) if per_year[y] >= need]
    skipped = [y for y in reversed(train) if per_year[y] < need]
    if skipped:
        ds.messages.append(
            "fold years skipped (fewer than " + str(need) + " samples): "
            + ", ".join(f"{y} ({per_year[y]})" for y in skipped)
        )
    if not fold_years:
        raise UserError(
            f"no fold possible: every training year has fewer than {need} samples at "
            f"sequence_length={ds.sequence_length} (per year: "
            + ", ".join(f"{y}: {per_year[y]}" for y in train)
            + "); use a shorter sequence length or set min_val_samples"
        )
    ds.fold_years = tuple(fold_years)
    if len(fold_years) < cfg.folds:
        ds.messages.append(f"{len(fold_years)} fold(s) possible, {cfg.folds} asked for")


def drop_constant(
    features: np.ndarray, names: tuple[str, ...]
) -> tuple[np.ndarray, tuple[str, ...], list[str]]:
    """Drop features constant over the record (with a note); the DLFM code made them NaN.

    The note goes to the Dataset's messages (printed by ``prepare``), never to ``warnings``.
    """
    keep, msgs = [], []
    for j, name in enumerate(names):
        col = features[:, j]
        col = col[np.isfinite(col)]
        if len(col) and np.ptp(col) == 0:
            msg = f"input {name} is constant ({col[0]:g}) over the whole record: dropped"
            msgs.append(msg)
        else:
            keep.append(j)
    if not keep:
        raise UserError("every input column is constant over the whole record")
    return features[:, keep], tuple(names[j] for j in keep), msgs

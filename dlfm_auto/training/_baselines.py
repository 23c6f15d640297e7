"""Reference skill on the same splits as the models: what a model must beat.

* **climatology**: the mean NEE of the training part by day of year, smoothed with a
  31-day circular moving mean (day 366 wraps to day 1). On US-UMB it alone scores R² ~0.84:
  most of a daily NEE "skill" is the seasonal cycle.
* **linear**: ordinary least squares on today's drivers (the study's input columns on the
  target day; no day of year, no lagged NEE, no window statistics).
* **persistence**: yesterday's observed NEE, only when the study feeds it (``--lag-nee``).

Baselines are fitted on each split's training part and scored on its validation part with
the one R²/MSE function (:func:`~dlfm_auto.training._result.r2_mse`). The anomaly sum of
squares of a split (observed minus its climatology, about its mean) turns any model's MSE on
that split into an anomaly R²: ``1 - n * MSE / SST_anom`` (the model's error equals its
anomaly error, since the same climatology is subtracted from both).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from dlfm_auto.data import Split, cache_dir
from dlfm_auto.training._result import group_scores, r2_from_sse, r2_mse

CLIM_WINDOW = 31  # days, circular
BASELINES_VERSION = 1  # bump when a baseline's definition changes (invalidates caches)
_STATS = re.compile(r"_(mean|var)\d+d$")
_NOT_DRIVERS = ("DOY", "NEE_lag1")
_MEM: dict[str, dict[str, Any]] = {}


def day_of_year(days: np.ndarray) -> np.ndarray:
    """0-based day of year (0..365) of datetime64 days."""
    d = np.asarray(days).astype("datetime64[D]")
    return (d - d.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)


def climatology(days: np.ndarray, y: np.ndarray, window: int = CLIM_WINDOW) -> np.ndarray:
    """Smoothed mean of ``y`` by day of year: (366,), a circular ``window``-day mean.

    Sums and counts are smoothed separately, so a day of year with few samples weighs by its
    count, and a day with none takes its neighbours' mean (the overall mean when the whole
    window is empty).
    """
    doy = day_of_year(days)
    y = np.asarray(y, dtype=np.float64)
    s = np.bincount(doy, weights=y, minlength=366)
    c = np.bincount(doy, minlength=366).astype(np.float64)
    h = window // 2
    kernel = np.ones(2 * h + 1)
    ss = np.convolve(np.r_[s[-h:], s, s[:h]], kernel, mode="valid")
    cc = np.convolve(np.r_[c[-h:], c, c[:h]], kernel, mode="valid")
    overall = float(y.mean()) if len(y) else 0.0
    return np.where(cc > 0, ss / np.maximum(cc, 1), overall)


def driver_columns(names: tuple[str, ...]) -> list[int]:
    """Indexes of the plain drivers among the feature names (today's meteorology)."""
    return [j for j, n in enumerate(names)
            if n not in _NOT_DRIVERS and not _STATS.search(n) and not n.startswith("site:")]


def predictions(split: Split) -> dict[str, np.ndarray]:
    """Each baseline's prediction for the split's validation part (fitted on its training)."""
    clim = climatology(split.train_days, split.y_train)
    out = {"climatology": clim[day_of_year(split.val_days)]}
    names = tuple(split.norm.feature_names)
    cols = driver_columns(names)
    if cols:
        A = np.c_[np.ones(len(split.y_train)), split.X_train[:, -1, cols].astype(np.float64)]
        coef, *_ = np.linalg.lstsq(A, np.asarray(split.y_train, dtype=np.float64), rcond=None)
        B = np.c_[np.ones(len(split.y_val)), split.X_val[:, -1, cols].astype(np.float64)]
        out["linear"] = B @ coef
    if "NEE_lag1" in names:
        j = names.index("NEE_lag1")
        out["persistence"] = (split.X_val[:, -1, j].astype(np.float64) * split.norm.std[j]
                              + split.norm.mean[j])
    return out


def anomaly_sst(split: Split) -> float:
    """Sum of squares of the validation anomalies (observed minus the split's climatology)."""
    clim = climatology(split.train_days, split.y_train)[day_of_year(split.val_days)]
    a = np.asarray(split.y_val, dtype=np.float64) - clim
    return float(np.sum((a - a.mean()) ** 2)) if len(a) else 0.0


def anomaly_r2(mse: float, n: int, sst_anom: float) -> float:
    """R² of a model on the anomalies, from its MSE on the split (see module docstring)."""
    return r2_from_sse(float(mse) * int(n), sst_anom)


def split_scores(split: Split) -> dict[str, Any]:
    """R²/MSE of every baseline on the split (overall and per validation year)."""
    obs = np.asarray(split.y_val, dtype=np.float64)
    out: dict[str, Any] = {"n": int(len(obs)), "val_years": list(split.val_years),
                           "anom_sst": anomaly_sst(split), "baselines": {}}
    for name, pred in predictions(split).items():
        r2, mse = r2_mse(obs, pred)
        out["baselines"][name] = {"r2": r2, "mse": mse}
    return out


def pooled_site_scores(splits: list[Split]) -> dict[str, dict[str, dict[str, float]]]:
    """Each baseline's R²/MSE per site over the validation parts of ``splits`` pooled (several
    sites): what a model's ``site_r2`` is compared with. {baseline: {site: {r2, mse, n}}}."""
    preds = [predictions(s) for s in splits]
    obs = np.concatenate([np.asarray(s.y_val, dtype=np.float64) for s in splits])
    sites = np.concatenate([s.val_sites for s in splits])
    return {name: group_scores(obs, np.concatenate([p[name] for p in preds]), sites)
            for name in preds[0]}


def per_year_scores(split: Split, val_season_years: np.ndarray) -> dict[int, dict[str, Any]]:
    """Baseline R²/MSE per held-out season year (``val_season_years`` per validation day)."""
    preds = predictions(split)
    obs = np.asarray(split.y_val, dtype=np.float64)
    out: dict[int, dict[str, Any]] = {}
    for y in np.unique(val_season_years):
        m = val_season_years == y
        out[int(y)] = {name: dict(zip(("r2", "mse"), r2_mse(obs[m], p[m]), strict=True))
                       for name, p in preds.items()}
    return out


def dataset_baselines(ds: Any) -> dict[str, Any]:
    """Baselines on a prepared dataset's CV folds and held-out years; cached by fingerprint.

    ``cv``: per baseline, the mean over folds of R² and MSE (as the study objective averages
    the model's folds); ``folds``: per-fold scores and anomaly sums of squares; ``heldout``:
    fitted on all training years, scored on the held-out years, overall and per year.
    Computed once per (data file, settings) and kept in memory and beside the data cache.
    """
    key = f"{ds.fingerprint()}-v{BASELINES_VERSION}"
    if key in _MEM:
        return _MEM[key]
    folder = cache_dir()
    path = folder / f"baselines-{key}.json" if folder is not None else None
    if path is not None and path.exists():
        try:
            _MEM[key] = json.loads(path.read_text())
            return _MEM[key]
        except (OSError, ValueError):
            pass
    folds = [split_scores(s) for s in ds.cv_splits()]
    names = sorted({n for f in folds for n in f["baselines"]})
    cv = {n: {"cv_r2": float(np.mean([f["baselines"][n]["r2"] for f in folds])),
              "cv_mse": float(np.mean([f["baselines"][n]["mse"] for f in folds]))}
          for n in names}
    out: dict[str, Any] = {"fingerprint": ds.fingerprint(), "cv": cv, "folds": folds,
                           "heldout": None}
    if ds.multi_site:  # per site, the folds pooled (with cv=sites: that site's own fold)
        out["cv_sites"] = pooled_site_scores(ds.cv_splits())
    if ds.eval_years:
        ev = ds.eval_split()
        out["heldout"] = {**split_scores(ev), "per_year": {
            str(y): v for y, v in per_year_scores(ev, ds.season_year[ds.heldout]).items()}}
        if ds.multi_site:
            out["heldout"]["per_site"] = pooled_site_scores([ev])
    out = json.loads(json.dumps(out, default=float))
    _MEM[key] = out
    if path is not None:
        try:
            from dlfm_auto._io import atomic_write_bytes

            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(out).encode())
        except OSError:
            pass  # a read-only cache folder only costs time
    return out

"""Memory units: the (L, seed) trials of a ``report memory`` companion study.

A memory report is a study like any other: its units are trials of an Optuna study
(``memory-...``) run by the same worker loop (:func:`dlfm_auto.study._worker.work`), so an
interrupted report continues where it stopped and ``worker`` processes elsewhere can share the
units. Its typed spec (:class:`MemoryUnits`) is stored in the study's user attribute
``MEMORY_ATTR``; the objective lives here, beside the search objective. ``reports`` only reads
the finished units.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from dlfm_auto.data import PrepareConfig, prepare
from dlfm_auto.models import get_family
from dlfm_auto.training import (
    baselines,
    group_scores,
    predict,
    r2_mse,
    train_many,
    train_split,
)
from dlfm_auto.training._result import r2_from_sse

MEMORY_ATTR = "dlfm_auto.memory"
#: Seeds a memory study can hold per length (``--num-models`` may grow up to this).
MAX_SEEDS = 1000


@dataclass(frozen=True)
class MemoryUnits:
    """What every unit of a memory study trains: one family, one parameter set, one data
    setting, each of ``lengths`` x ``num_models`` seeds."""

    family: str
    params: dict[str, Any]
    lengths: tuple[int, ...]
    num_models: int
    prep: PrepareConfig
    max_epochs: int | None = None
    patience: int = 50
    data_sha256: str | None = None

    @property
    def total(self) -> int:
        return len(self.lengths) * self.num_models

    def to_attr(self) -> dict[str, Any]:
        """The JSON form stored in the study (keys as stored since the first memory study)."""
        prep = {"data": self.prep.data, **self.prep.settings()}
        if self.prep.site_info is not None:  # a path: settings() leaves it out (hashed apart)
            prep["site_info"] = self.prep.site_info
        d = {"kind": "memory", "family": self.family, "params": self.params,
             "lengths": list(self.lengths), "num_models": self.num_models,
             "max_epochs": self.max_epochs, "patience": self.patience,
             "prep": prep, "data_sha256": self.data_sha256}
        return json.loads(json.dumps(d, default=str))

    @classmethod
    def from_attr(cls, d: dict[str, Any]) -> MemoryUnits:
        prep = dict(d["prep"])
        if prep.get("columns") is not None:
            prep["columns"] = tuple(prep["columns"])
        return cls(family=d["family"], params=dict(d["params"]), lengths=tuple(d["lengths"]),
                   num_models=int(d["num_models"]), prep=PrepareConfig(**prep),
                   max_epochs=d.get("max_epochs"), patience=int(d.get("patience", 50)),
                   data_sha256=d.get("data_sha256"))

    def study_name(self, site: str | None) -> str:
        """``memory-FAMILY-SITE-HASH``: the same units (and only they) share a study."""
        # "v": 2 = units scored on CV folds with anomaly R² (issue 10); 3 = seed drawn from
        # one fixed range (was a choice list of num_models: another --num-models crashed).
        # Older units are not mixed in. Several sites: the files' combined hash too, so two site sets with the
        # same settings never share units (one-site names stay as they were).
        key = {"p": self.params, "s": self.prep.settings(), "L": self.lengths,
               "e": self.max_epochs, "v": 3}
        if self.prep.multi_site:
            key["d"] = self.data_sha256
        blob = json.dumps(key, sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
        return f"memory-{self.family}-{site or 'site'}-{digest}"

    def with_data(self, data: str | tuple[str, ...]) -> MemoryUnits:
        """The same units on a local copy of the data file(s) (``worker --data``)."""
        return dataclasses.replace(self, prep=self.prep.replace(data=data))


def load_units(study: optuna.Study) -> MemoryUnits | None:
    """The study's memory units, or None for a search study."""
    d = study.user_attrs.get(MEMORY_ATTR)
    return None if d is None else MemoryUnits.from_attr(d)


class MemoryObjective:
    """One (L, seed) unit: CV folds of the training years, plus the held-out years beside."""

    def __init__(self, units: MemoryUnits) -> None:
        self.units = units
        self.family = get_family(units.family)
        self.prep = units.prep

    def __call__(self, trial: optuna.Trial) -> float:
        u = self.units
        lengths = u.lengths
        L = trial.suggest_categorical("sequence_length", list(lengths))
        # one fixed range: a later run with more (or fewer) seeds reuses the same study
        seed = trial.suggest_int("seed", 0, MAX_SEEDS - 1)
        ds = prepare(self.prep.replace(sequence_length=L, match_length=max(lengths)))
        params = u.params
        # The family's own budget (epochs, or every boosting round / tree), capped only by
        # --max-epochs: trees are not cut to 100 for lack of an ``epochs`` parameter.
        cap = u.max_epochs
        cv, chosen = [], []
        splits = ds.cv_splits()
        folds = train_many(self.family, params, splits,  # one batched model where it applies
                           [1000 * seed + i for i in range(len(splits))], max_epochs=cap,
                           patience=u.patience)
        for split, res in zip(splits, folds, strict=True):
            cv.append(_year_record(split.val_years[0], split, res.mse))
            chosen.append(int(res.best_epoch))
        trial.set_user_attr("cv_years", cv)
        trial.set_user_attr("best_epochs", chosen)
        if ds.multi_site:  # per-site curves of the memory atlas
            masks = [m for _, m in ds.folds()]
            parts = [(s, predict(self.family, r.model, s.X_val), ds.season_year[m])
                     for s, r, m in zip(splits, folds, masks, strict=True)]
            _set_site_attrs(trial, "cv", parts)
        if ds.eval_years:
            ev = ds.eval_split()
            budget = (max(1, round(float(np.mean(chosen))) + 1)
                      if self.family.kind == "torch" or self.family.name == "xgboost" else cap)
            if cap and budget:
                budget = min(budget, cap)
            res = train_split(self.family, params, ev, max_epochs=budget, patience=10**9,
                              seed=1000 * seed + 999, restore_best=False)
            pred = predict(self.family, res.model, ev.X_val)
            sy = ds.season_year[ds.heldout]
            clim = baselines.climatology(ev.train_days, ev.y_train)[
                baselines.day_of_year(ev.val_days)]
            recs = []
            for y in ds.eval_years:
                m = sy == y
                recs.append(_record(int(y), ev.y_val[m], pred[m], clim[m]))
            trial.set_user_attr("eval_years", recs)
            if ds.multi_site:
                _set_site_attrs(trial, "eval", [(ev, pred, sy)])
        return float(np.mean([r["r2"] for r in cv]))


def _record(year: int, obs: np.ndarray, pred: np.ndarray, clim: np.ndarray) -> dict[str, Any]:
    """One scored year: n, R², MSE, anomaly R² (observed minus climatology)."""
    obs = np.asarray(obs, dtype=np.float64)
    r2, mse = r2_mse(obs, pred)
    a = obs - clim
    sst = float(np.sum((a - a.mean()) ** 2))
    return {"year": year, "n": int(len(obs)), "r2": r2, "mse": mse,
            "anom_r2": baselines.anomaly_r2(mse, len(obs), sst)}


def _year_record(year: int, split: Any, mse: float) -> dict[str, Any]:
    """One CV fold (a year; with ``cv="sites"`` a site, ``year`` then its first year): the fold
    model's MSE turned into R² and anomaly R²."""
    obs = np.asarray(split.y_val, dtype=np.float64)
    sst = float(np.sum((obs - obs.mean()) ** 2))
    return {"year": int(year), "fold": split.name, "n": int(len(obs)), "mse": float(mse),
            "r2": r2_from_sse(mse * len(obs), sst),
            "anom_r2": baselines.anomaly_r2(mse, len(obs), baselines.anomaly_sst(split))}


#: The sums a (site, season year) record keeps: enough for R² and anomaly R² of any set of
#: such records pooled (a bootstrap of years needs no per-day data).
SUM_KEYS = ("n", "sse", "sy", "syy", "sa", "saa")


def site_year_sums(obs: np.ndarray, pred: np.ndarray, clim: np.ndarray, sites: np.ndarray,
                   years: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    """{site: [{year, n, sse, sy, syy, sa, saa}, ...]}: per (site, season year) the sums of
    squared errors, of the observations and of the anomalies (observed minus ``clim``)."""
    obs = np.asarray(obs, dtype=np.float64)
    err = np.asarray(pred, dtype=np.float64) - obs
    a = obs - np.asarray(clim, dtype=np.float64)
    out: dict[str, list[dict[str, Any]]] = {}
    for site in sorted(set(sites.tolist())):
        recs = []
        for y in sorted(set(years[sites == site].tolist())):
            m = (sites == site) & (years == y)
            recs.append({"year": int(y), "n": int(m.sum()), "sse": float(np.sum(err[m] ** 2)),
                         "sy": float(obs[m].sum()), "syy": float(np.sum(obs[m] ** 2)),
                         "sa": float(a[m].sum()), "saa": float(np.sum(a[m] ** 2))})
        out[str(site)] = recs
    return out


def _set_site_attrs(trial: optuna.Trial, part: str,
                    parts: list[tuple[Any, np.ndarray, np.ndarray]]) -> None:
    """Several sites: per site the R² of the validation predictions of ``parts`` (split,
    prediction, season year per validation day) pooled (``training.group_scores``, as a
    trial's ``site_r2``), and per (site, year) the sums the atlas bootstraps."""
    obs = np.concatenate([s.y_val for s, _, _ in parts]).astype(np.float64)
    pred = np.concatenate([p for _, p, _ in parts])
    sites = np.concatenate([s.val_sites for s, _, _ in parts])
    years = np.concatenate([y for _, _, y in parts])
    clim = np.concatenate([baselines.climatology(s.train_days, s.y_train)[
        baselines.day_of_year(s.val_days)] for s, _, _ in parts])
    trial.set_user_attr(f"{part}_site_scores", group_scores(obs, pred, sites))
    trial.set_user_attr(f"{part}_site_years", site_year_sums(obs, pred, clim, sites, years))


def queue_units(study: optuna.Study, lengths: tuple[int, ...], num_models: int) -> int:
    """Queue each (L, seed) with no finished, running or queued trial. Returns units queued."""
    optuna.storages.fail_stale_trials(study)
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    have = set()
    for t in study.get_trials(deepcopy=False, states=live):
        p = t.params or t.system_attrs.get("fixed_params", {})
        have.add((p.get("sequence_length"), p.get("seed")))
    n = 0
    for L in lengths:
        for s in range(num_models):
            if (L, s) not in have:
                study.enqueue_trial({"sequence_length": L, "seed": s})
                n += 1
    return n

"""``random_forest``: scikit-learn random forest (DLFM RandomForest)."""

from __future__ import annotations

from typing import Any

import optuna

from dlfm_auto.models._base import FEEDS, Family, suggest_feed
from dlfm_auto.models._tabular import TabularModel

LENGTHS = (7, 14, 30)


def _space(trial: optuna.Trial) -> dict[str, Any]:
    p = suggest_feed(trial)
    p.update(
        n_estimators=trial.suggest_categorical("n_estimators", [100, 300, 1000]),
        max_depth=trial.suggest_categorical("max_depth", [5, 10, 20, 30]),
        min_samples_leaf=trial.suggest_int("min_samples_leaf", 1, 20, log=True),
        max_features=trial.suggest_categorical("max_features", [1.0, 0.5, "sqrt"]),
    )
    return p


def _build(p: dict[str, Any], n_features: int, seq_len: int) -> TabularModel:
    from sklearn.ensemble import RandomForestRegressor

    est = RandomForestRegressor(
        n_estimators=int(p["n_estimators"]),
        max_depth=None if p.get("max_depth") is None else int(p["max_depth"]),
        min_samples_leaf=int(p.get("min_samples_leaf", 1)),
        max_features=p.get("max_features", 1.0), n_jobs=int(p.get("n_jobs", 1)),
        random_state=int(p.get("seed", 0)),
    )
    return TabularModel(est, p["feed"])


FAMILY = Family(
    name="random_forest", sequence=False, kind="tree",
    description="random forest (DLFM RandomForest)", space=_space,
    dlfm_grid={"n_estimators": [1000, 2000], "max_depth": [10, 30]},
    builder=_build, sequence_lengths=LENGTHS, feeds=FEEDS, defaults={"feed": "today"},
    max_epochs=1,  # one fit, one report per fold
)

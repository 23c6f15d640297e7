"""``xgboost``: gradient-boosted trees (DLFM XGBoost), early stopping on an inner training year.

The CPU build (``xgboost-cpu``) is what the package depends on; a GPU user installs the
``xgboost`` wheel instead (same ``import xgboost``) and the trainer passes ``device="cuda"``.
"""

from __future__ import annotations

from typing import Any

import optuna

from dlfm_auto.models._base import FEEDS, Family, suggest_feed
from dlfm_auto.models._tabular import TabularModel

LENGTHS = (7, 14, 30)
BOOSTER_KEYS = ("learning_rate", "n_estimators", "max_depth", "subsample", "colsample_bytree",
                "min_child_weight", "reg_lambda")


def _space(trial: optuna.Trial) -> dict[str, Any]:
    p = suggest_feed(trial)
    p.update(
        learning_rate=trial.suggest_float("learning_rate", 5e-3, 0.3, log=True),
        # A budget: early stopping on the fold's inner training year usually ends far sooner.
        n_estimators=trial.suggest_categorical("n_estimators", [500, 2000, 5000]),
        max_depth=trial.suggest_int("max_depth", 2, 10),
        subsample=trial.suggest_float("subsample", 0.5, 1.0),
        colsample_bytree=trial.suggest_float("colsample_bytree", 0.5, 1.0),
        min_child_weight=trial.suggest_float("min_child_weight", 0.5, 20, log=True),
        reg_lambda=trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    )
    return p


def _build(p: dict[str, Any], n_features: int, seq_len: int) -> TabularModel:
    import xgboost as xgb

    kw = {k: p[k] for k in BOOSTER_KEYS if k in p}
    est = xgb.XGBRegressor(
        **kw, n_jobs=int(p.get("n_jobs", 1)), tree_method="hist",
        random_state=int(p.get("seed", 0)), device=p.get("xgb_device", "cpu"),
        early_stopping_rounds=p.get("early_stopping_rounds"), eval_metric="rmse",
    )
    return TabularModel(est, p["feed"])


FAMILY = Family(
    name="xgboost", sequence=False, kind="tree", description="XGBoost (DLFM XGBoost)",
    space=_space, dlfm_grid={"learning_rate": [0.01], "n_estimators": [1000, 10000]},
    builder=_build, sequence_lengths=LENGTHS, feeds=FEEDS,
    defaults={"feed": "today", "max_depth": 6}, max_epochs=10000,
)

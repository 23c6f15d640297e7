"""XGBoost and random forest on one split, reporting per fold (so fold pruning works)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dlfm_auto.data import Split
from dlfm_auto.training._result import FoldResult, check_split, r2_mse

EARLY_STOPPING_ROUNDS = 100


def train_tree(
    family: Any,
    params: dict[str, Any],
    split: Split,
    *,
    max_epochs: int | None,
    seed: int,
    report: Callable[[int, float], None] | None,
    restore_best: bool,
    n_jobs: int = 1,
) -> FoldResult:
    """Fit on the training part; XGBoost stops early on the validation year.

    ``max_epochs`` caps the number of boosting rounds (XGBoost) or trees (forest), so
    ``--max-epochs`` keeps quick runs quick for every family. ``restore_best=False`` (final
    models) fits the given number of rounds with no look at the validation part.
    """
    t0 = time.perf_counter()
    p = family.resolve(params)
    check_split(family, p, split)
    p = {**p, "seed": seed, "n_jobs": n_jobs}
    if max_epochs:
        p["n_estimators"] = max(1, min(int(p["n_estimators"]), int(max_epochs)))
    xgb = family.name == "xgboost"
    if xgb and restore_best:
        p["early_stopping_rounds"] = EARLY_STOPPING_ROUNDS
    model = family.build(p, split.n_features, split.sequence_length)
    Xtr, Xva = model.table(split.X_train), model.table(split.X_val)
    history: dict[str, list[float]] = {}
    best = int(p["n_estimators"])
    if xgb:
        kw = {"eval_set": [(Xva, split.y_val)], "verbose": False} if restore_best else {}
        model.estimator.fit(Xtr, split.y_train, **kw)
        if restore_best:
            best = int(model.estimator.best_iteration) + 1
            rmse = model.estimator.evals_result()["validation_0"]["rmse"]
            history["val_rmse"] = [float(v) for v in rmse]
    else:
        model.estimator.fit(Xtr, split.y_train)
    pred = model.predict(split.X_val)
    r2, mse = r2_mse(split.y_val, pred)
    if report is not None:
        report(0, r2)
    return FoldResult(r2=r2, mse=mse, best_epoch=best, epochs_run=int(p["n_estimators"]),
                      n_train=len(split.y_train), n_val=len(split.y_val), model=model,
                      history=history, seconds=time.perf_counter() - t0)

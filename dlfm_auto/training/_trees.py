"""XGBoost and random forest on one split.

XGBoost stops early on the split's inner validation part (a training year, see
``Dataset.inner_mask``; never the scored year) and reports the scored part's R² every
``XGB_REPORT_EVERY`` boosting rounds (step = round index, like epochs for torch), so epoch-wise
pruners can stop it inside a fold. The forest chooses nothing: it fits on the whole training
part once and reports once per split (step 0), which is what fold-wise pruning (Wilcoxon)
needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dlfm_auto.data import Split
from dlfm_auto.training._result import FoldResult, check_split, r2_from_sse, r2_mse

#: Rounds without validation improvement before XGBoost stops (at least; ``patience`` if more).
EARLY_STOPPING_ROUNDS = 100
#: Report every this many boosting rounds: per round would write thousands of intermediate
#: values to the study storage for little pruning benefit.
XGB_REPORT_EVERY = 100


def _xgb_reporter(report: Callable[[int, float], None], y_val: np.ndarray, every: int) -> Any:
    """An XGBoost callback turning the validation RMSE into R² reports every ``every`` rounds."""
    import xgboost as xgb

    var = float(np.var(np.asarray(y_val, dtype=np.float64)))

    class Reporter(xgb.callback.TrainingCallback):
        last = -1

        def _r2(self, evals_log: dict) -> float:
            rmse = float(evals_log["validation_0"]["rmse"][-1])
            return r2_from_sse(rmse**2, var)  # per-sample SSE and SST: the same ratio

        def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
            if (epoch + 1) % every == 0:
                self.last = epoch
                report(epoch, self._r2(evals_log))  # may raise optuna.TrialPruned
            self.log = evals_log
            return False

        def after_training(self, model: Any) -> Any:
            rounds = model.num_boosted_rounds()
            if rounds - 1 > self.last and getattr(self, "log", None):
                report(rounds - 1, self._r2(self.log))
            return model

    return Reporter()


def train_tree(
    family: Any,
    params: dict[str, Any],
    split: Split,
    *,
    max_epochs: int | None,
    patience: int,
    seed: int,
    report: Callable[[int, float], None] | None,
    restore_best: bool,
    n_jobs: int = 1,
    device: str | None = None,
) -> FoldResult:
    """Fit on the training part, score the validation part.

    ``max_epochs`` caps the boosting rounds (XGBoost) or trees (forest), so quick runs stay
    quick for every family. XGBoost fits on the training part minus its inner validation part
    and stops early on that part (``early_stopping_rounds`` watches the last eval set); without
    an inner part, or with ``restore_best=False`` (final models), it fits every round on the
    whole training part. The validation part is only scored.
    """
    t0 = time.perf_counter()
    p = family.resolve(params)
    check_split(family, p, split)
    p = {**p, "seed": seed, "n_jobs": n_jobs}
    if max_epochs:
        p["n_estimators"] = max(1, min(int(p["n_estimators"]), int(max_epochs)))
    xgb = family.name == "xgboost"
    inner = split.inner_val if (xgb and restore_best) else None
    if inner is not None and (inner.all() or not inner.any()):
        inner = None
    fit = ~inner if inner is not None else np.ones(len(split.y_train), dtype=bool)
    if xgb:
        p["xgb_device"] = _xgb_device(device)
        if inner is not None:
            p["early_stopping_rounds"] = max(EARLY_STOPPING_ROUNDS, min(int(patience), 10**6))
    model = family.build(p, split.n_features, split.sequence_length)
    Xtr, Xva = model.table(split.X_train[fit]), model.table(split.X_val)
    ytr = split.y_train[fit]
    history: dict[str, list[float]] = {}
    best = int(p["n_estimators"]) - 1
    rounds = best + 1
    if xgb:
        est = model.estimator
        if report is not None:
            est.set_params(callbacks=[_xgb_reporter(report, split.y_val, XGB_REPORT_EVERY)])
        evals = [(Xva, split.y_val)]  # validation_0: reported and drawn, never chosen on
        if inner is not None:  # the last eval set is the one early stopping watches
            evals.append((model.table(split.X_train[inner]), split.y_train[inner]))
        try:
            est.fit(Xtr, ytr, eval_set=evals, verbose=False)
        finally:
            est.set_params(callbacks=None)  # the closure must not be pickled with the model
        rmse = [float(v) for v in est.evals_result()["validation_0"]["rmse"]]
        var = float(np.var(np.asarray(split.y_val, dtype=np.float64)))
        history["val_r2"] = [r2_from_sse(r**2, var) for r in rmse]
        rounds = len(rmse)
        if inner is not None:
            best = int(est.best_iteration)  # predict() uses the best iteration
            rin = est.evals_result()["validation_1"]["rmse"]
            vin = float(np.var(np.asarray(split.y_train[inner], dtype=np.float64)))
            history["inner_r2"] = [r2_from_sse(float(r) ** 2, vin) for r in rin]
        else:
            best = rounds - 1
    else:
        model.estimator.fit(Xtr, ytr)
    pred = model.predict(split.X_val)
    r2, mse = r2_mse(split.y_val, pred)
    if report is not None and not xgb:
        report(0, r2)
    return FoldResult(r2=r2, mse=mse, best_epoch=best if xgb else 0,
                      epochs_run=rounds if xgb else 1, n_train=len(ytr),
                      n_inner=0 if inner is None else int(inner.sum()),
                      n_val=len(split.y_val), model=model, history=history,
                      seconds=time.perf_counter() - t0)


def _xgb_device(device: str | None) -> str:
    """XGBoost's device: CUDA only when asked for (or available) *and* the build has it."""
    import xgboost

    want = device or ("cuda" if _cuda_available() else "cpu")
    if want.startswith("cuda") and not xgboost.build_info().get("USE_CUDA"):
        return "cpu"  # xgboost-cpu build: the GPU user installs the `xgboost` wheel
    return "cuda" if want.startswith("cuda") else "cpu"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()

"""Training one split (one year fold, or training years vs held-out years)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dlfm_auto.data import Split
from dlfm_auto.training._result import FoldResult, r2_mse
from dlfm_auto.training._torch import predict_torch, resolve_device, train_torch
from dlfm_auto.training._trees import train_tree


def train_split(
    family: Any,
    params: dict[str, Any],
    split: Split,
    *,
    max_epochs: int | None = None,
    patience: int = 50,
    seed: int = 0,
    device: str | None = None,
    report: Callable[[int, float], None] | None = None,
    eval_every: int = 1,
    restore_best: bool = True,
    n_jobs: int = 1,
) -> FoldResult:
    """Train ``family`` with ``params`` on ``split``; validation R²/MSE of the returned model.

    ``report(step, val_r2)`` is called after each evaluation (each epoch, or each fold for
    trees) and may raise ``optuna.TrialPruned``. ``epochs`` in params is a budget: training
    stops after ``patience`` epochs without improvement and, with ``restore_best``, returns the
    best epoch's weights. ``restore_best=False`` trains the whole budget and returns the last
    weights (final models: the held-out years must not choose the epoch).
    """
    if family.kind == "tree":
        return train_tree(family, params, split, max_epochs=max_epochs, seed=seed,
                          report=report, restore_best=restore_best, n_jobs=n_jobs)
    return train_torch(family, params, split, max_epochs=max_epochs, patience=patience,
                       seed=seed, device=device, report=report, eval_every=eval_every,
                       restore_best=restore_best)


def predict(family: Any, model: Any, X: np.ndarray) -> np.ndarray:
    """Predicted NEE (data units) for windows ``X`` (n, L, f), normalised like the split."""
    if family.kind == "tree":
        return model.predict(X)
    return predict_torch(model, X)


__all__ = ["FoldResult", "predict", "r2_mse", "resolve_device", "train_split"]

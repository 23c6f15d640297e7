"""Training one split (one year fold, or training years vs held-out years), and CV over folds."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dlfm_auto.data import Split
from dlfm_auto.training import _baselines as baselines
from dlfm_auto.training._batched import batch_applies, train_members
from dlfm_auto.training._result import CVResult, FoldResult, check_split, group_scores, r2_mse
from dlfm_auto.training._torch import epoch_budget, predict_torch, resolve_device, train_torch
from dlfm_auto.training._trees import train_tree

Report = Callable[[int, float], None]


def train_split(
    family: Any,
    params: dict[str, Any],
    split: Split,
    *,
    max_epochs: int | None = None,
    patience: int = 50,
    seed: int = 0,
    device: str | None = None,
    report: Report | None = None,
    eval_every: int = 1,
    restore_best: bool = True,
    threads: int | None = 1,
    n_jobs: int = 1,
) -> FoldResult:
    """Train ``family`` (a Family or its name) with ``params`` on ``split``.

    Returns the validation R²/MSE of the returned model and the model itself.

    ``params["epochs"]`` is a budget, capped by ``max_epochs`` (for trees ``max_epochs`` caps
    boosting rounds / trees). When the split has an inner validation part (``inner_val``,
    training years only), training fits the rest of the training part, stops after
    ``patience`` epochs without a better inner R² and returns the best inner epoch's weights
    (XGBoost: rounds); the validation part is only scored. Without one, or with
    ``restore_best=False``, the whole budget is trained on the whole training part and the
    last weights are returned (final models: held-out years must not choose the epoch).
    ``report(step, val_r2)`` is called every ``eval_every`` epochs (torch), every
    100 boosting rounds (XGBoost) or once (forest), with the 0-based epoch/round as step; it
    may raise ``optuna.TrialPruned``, which propagates. ``threads``: torch intra-op threads
    during training (None leaves the setting alone); ``n_jobs``: tree-building threads.
    ``device``: "cuda" when available, else "cpu", unless given. Same seed, same result.
    Impossible requests (too few windows, a window length the family cannot take) raise
    :class:`~dlfm_auto.UserError` before any work.
    """
    family = _family(family)
    if resolve_device(device).type == "cpu" and batch_applies(family, params, device):
        # the whole-epoch kernel, a batch of one (a GPU keeps cuDNN for a single model)
        return train_members(family, params, [split], [seed], max_epochs=max_epochs,
                             patience=patience, reports=[report], eval_every=eval_every,
                             restore_best=restore_best, threads=threads)[0]
    if family.kind == "tree":
        return train_tree(family, params, split, max_epochs=max_epochs, patience=patience,
                          seed=seed, report=report, restore_best=restore_best, n_jobs=n_jobs,
                          device=device)
    return train_torch(family, params, split, max_epochs=max_epochs, patience=patience,
                       seed=seed, device=device, report=report, eval_every=eval_every,
                       restore_best=restore_best, threads=threads)


def report_stride(family: Any, max_epochs: int | None = None) -> int:
    """Steps reserved per fold: the family's largest epoch budget (capped by ``max_epochs``).

    A family-wide constant, not the trial's own ``epochs``: trials with different budgets must
    report fold k's epoch e at the same step for a pruner to compare them.
    """
    return epoch_budget(_family(family), {}, max_epochs)


def cross_validate(
    family: Any,
    params: dict[str, Any],
    splits: Sequence[Split],
    *,
    report: Report | None = None,
    max_epochs: int | None = None,
    patience: int = 50,
    seed: int = 0,
    device: str | None = None,
    eval_every: int = 1,
    threads: int | None = 1,
    n_jobs: int = 1,
    stride: int | None = None,
) -> CVResult:
    """Train every split (fold ``i`` with seed ``seed + i``); mean R² is the objective.

    Intermediate values go to ``report(step, value)`` at the global step
    ``step = fold_index * stride + epoch`` (``stride`` defaults to :func:`report_stride`), so
    every trial reports fold k's epoch e at the same step and median/percentile/hyperband
    pruners compare like with like, and a bad trial can be stopped inside its first fold. The
    value is the best validation R² of the current fold so far, so a trial is not pruned for
    one noisy epoch (pruning only drops trials; the fold's model is chosen on its inner part).
    For the forest (one fit per fold, stride 1) the step is the fold index: per-fold values,
    as the Wilcoxon pruner wants.
    ``optuna.TrialPruned`` raised by ``report`` propagates.

    LSTM/RNN folds train as one batched model (:func:`train_many`) when nothing is reported,
    and on a GPU always (the values are held back and reported fold after fold, so pruners
    see the same sequence; a pruned trial stops every fold). With a reporter on the CPU they
    train one after another through the same whole-epoch kernel: there a batch costs the same
    per fold-epoch as its members alone, and a pruned trial stops inside its first fold
    instead of having trained every fold that far. Each fold's result is the same either way.
    """
    family = _family(family)
    stride = int(stride or report_stride(family, max_epochs))
    cpu = resolve_device(device).type == "cpu"
    if (report is None or not cpu) and batch_applies(family, params, device):
        reports = None if report is None else [
            _fold_reporter(report, i, stride) for i in range(len(splits))]
        results = train_members(family, params, splits, [seed + i for i in range(len(splits))],
                                max_epochs=max_epochs, patience=patience, reports=reports,
                                eval_every=eval_every, threads=threads, device=device)
        return CVResult(folds=results, split_names=[s.name for s in splits], stride=stride)
    results: list[FoldResult] = []
    for i, split in enumerate(splits):
        fold_report = None if report is None else _fold_reporter(report, i, stride)
        results.append(train_split(family, params, split, max_epochs=max_epochs,
                                   patience=patience, seed=seed + i, device=device,
                                   report=fold_report, eval_every=eval_every, threads=threads,
                                   n_jobs=n_jobs))
    return CVResult(folds=results, split_names=[s.name for s in splits], stride=stride)


def train_many(
    family: Any,
    params: dict[str, Any],
    splits: Sequence[Split],
    seeds: Sequence[int],
    *,
    max_epochs: int | None = None,
    patience: int = 50,
    device: str | None = None,
    eval_every: int = 1,
    restore_best: bool = True,
    threads: int | None = 1,
    n_jobs: int = 1,
) -> list[FoldResult]:
    """``train_split(family, params, splits[i], seed=seeds[i], ...)`` for every i.

    One batched model (stacked weights, one kernel call per epoch for every member) where
    :func:`~dlfm_auto.training._batched.batch_applies`, else one model after another; each
    result is the same either way. For the seeds x folds of reports and CV without pruning.
    """
    family = _family(family)
    if batch_applies(family, params, device):
        return train_members(family, params, splits, seeds, max_epochs=max_epochs,
                             patience=patience, eval_every=eval_every,
                             restore_best=restore_best, threads=threads, device=device)
    return [train_split(family, params, s, max_epochs=max_epochs, patience=patience, seed=sd,
                        device=device, eval_every=eval_every, restore_best=restore_best,
                        threads=threads, n_jobs=n_jobs)
            for s, sd in zip(splits, seeds, strict=True)]


def _family(family: Any) -> Any:
    """A Family, given one or its registry name."""
    if isinstance(family, str):
        from dlfm_auto.models import get_family

        return get_family(family)
    return family


def _fold_reporter(report: Report, fold: int, stride: int) -> Report:
    best = -math.inf

    def fold_report(epoch: int, val_r2: float) -> None:
        nonlocal best
        if math.isfinite(val_r2):
            best = max(best, float(val_r2))
        if math.isfinite(best):
            report(fold * stride + min(int(epoch), stride - 1), best)

    return fold_report


def predict(family: Any, model: Any, X: np.ndarray) -> np.ndarray:
    """Predicted NEE (data units) for windows ``X`` (n, L, f), normalised like the split."""
    if _family(family).kind == "tree":
        return model.predict(X)
    return predict_torch(model, X)


__all__ = [
    "CVResult",
    "baselines",
    "FoldResult",
    "check_split",
    "cross_validate",
    "group_scores",
    "predict",
    "r2_mse",
    "report_stride",
    "resolve_device",
    "train_many",
    "train_split",
]

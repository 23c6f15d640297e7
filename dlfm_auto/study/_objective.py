"""The objective: mean validation R² over the leave-one-year-out folds.

Intermediate values: with the median and hyperband pruners, every epoch of every fold is
reported at step ``fold * stride + epoch`` (``stride`` = the study's largest epoch budget), so
trials are compared at the same fold and epoch and a bad trial stops inside its first fold. With
the Wilcoxon pruner, each fold's R² is reported at step = fold index, the paired per-fold
comparison that pruner is designed for. The value reported per epoch is the best validation R²
of the fold so far, which is what the fold will return under early stopping.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from dlfm_auto.data import prepare
from dlfm_auto.models import get_family
from dlfm_auto.study._space import Restricted, Space
from dlfm_auto.study._spec import StudySpec
from dlfm_auto.training import cross_validate, report_stride, train_split

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def default_sequence_length(family_name: str) -> int:
    """DLFM defaults when a grid study is not given --sequence-length: 30 days, or today."""
    return 30 if get_family(family_name).sequence else 1


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Every point of the family's DLFM grid, in a fixed order."""
    import itertools

    grid = get_family(spec.family).grid()
    keys = sorted(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def suggest_grid(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    grid = get_family(spec.family).grid()
    return {k: trial.suggest_categorical(k, list(v)) for k, v in sorted(grid.items())}


class _FixedLength:
    """A trial whose ``sequence_length`` is the user's --sequence-length, whatever the space.

    The user's L may lie outside the family's searched choices (e.g. L=3), so it cannot be a
    fixed Optuna parameter; it is recorded as the trial's ``sequence_length`` attribute instead.
    """

    def __init__(self, trial: optuna.Trial, length: int) -> None:
        self._trial, self._length = trial, length

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        if name == "sequence_length":
            return self._length
        return self._trial.suggest_categorical(name, choices)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


class Objective:
    """Callable for ``study.optimize``; built from the stored spec by every worker."""

    def __init__(self, spec: StudySpec, *, device: str | None = None) -> None:
        self.spec = spec
        self.family = get_family(spec.family)
        self.device = device
        self.stride = report_stride(self.family, spec.max_epochs)
        self.on_best = None  # callback(trial, params, results, dataset) set by the runner
        self.space: Space | None = None  # choices the data can fill (study/_space.py)

    def params(self, trial: optuna.Trial) -> dict[str, Any]:
        if self.space is not None and self.space.choices:
            trial = Restricted(trial, self.space.choices)  # type: ignore[assignment]
        if self.spec.sampler == "grid":
            return suggest_grid(trial, self.spec)
        if self.spec.fixed_length:
            return dict(self.family.suggest(_FixedLength(trial, self.spec.prep.sequence_length)))
        return dict(self.family.suggest(trial))

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            # Recorded on the (failed) trial so the next run re-queues its parameters.
            trial.set_user_attr("interrupted", True)
            raise

    def _run(self, trial: optuna.Trial) -> float:
        spec = self.spec
        params = self.params(trial)
        L = spec.prep.sequence_length
        if not spec.fixed_length and "sequence_length" in params:
            L = int(params["sequence_length"])
        match = spec.prep.match_length
        lengths = getattr(self.family, "sequence_lengths", None)
        if not spec.fixed_length and lengths:
            match = max(max(lengths), match or 0)  # same target days for every searched L
        if self.space is not None and self.space.match_length:
            match = self.space.match_length  # the longest L the data can fill
        ds = prepare(spec.prep.replace(sequence_length=L, match_length=match))
        splits = ds.cv_splits()
        params = {k: v for k, v in params.items() if k != "sequence_length"}
        common = dict(max_epochs=spec.max_epochs, patience=spec.patience, device=self.device)
        if spec.pruner in ("median", "hyperband"):
            # every epoch of every fold, at step fold * stride + epoch (see module docstring)
            results = cross_validate(self.family, params, splits, report=self._reporter(trial),
                                     seed=spec.seed, stride=self.stride, **common).folds
        else:
            results = []
            for i, split in enumerate(splits):
                res = train_split(self.family, params, split, seed=spec.seed + i, **common)
                results.append(res)
                if spec.pruner == "wilcoxon":  # paired per-fold comparison
                    self._reporter(trial)(i, float(res.r2))
        r2 = [float(r.r2) for r in results]
        mse = [float(r.mse) for r in results]
        trial.set_user_attr("fold_val_years", [s.val_years[0] for s in splits])
        trial.set_user_attr("fold_r2", r2)
        trial.set_user_attr("fold_mse", mse)
        trial.set_user_attr("best_epochs", [int(r.best_epoch) for r in results])
        trial.set_user_attr("n_train", [int(r.n_train) for r in results])
        trial.set_user_attr("n_val", [int(r.n_val) for r in results])
        trial.set_user_attr("sequence_length", L)
        trial.set_user_attr("cv_r2_sd", statistics.stdev(r2) if len(r2) > 1 else 0.0)
        trial.set_user_attr("cv_mse", float(np.mean(mse)))
        value = float(np.mean(r2))
        if not math.isfinite(value):
            raise ValueError(f"non-finite CV R² ({r2})")
        if self.on_best is not None:
            self.on_best(trial, value, params, results, ds, splits)
        return value

    @staticmethod
    def _reporter(trial: optuna.Trial):
        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        return report

"""The objective: mean validation R² over the leave-one-year-out folds.

Intermediate values: with the median and hyperband pruners, every epoch of every fold is
reported at step ``fold * stride + epoch`` (``stride`` = the study's largest epoch budget), so
trials are compared at the same fold and epoch and a bad trial stops inside its first fold. With
the Wilcoxon pruner, each fold's R² is reported at step = fold index, the paired per-fold
comparison that pruner is designed for. The value reported per epoch is the best validation R²
of the fold so far (pruning only drops trials, so it may watch the validation year).

What a fold returns is honest: its epoch (or XGBoost's rounds) is chosen on an inner training
year (``Dataset.inner_mask``), and its score is that model's R² on the validation year. Trials
record the choice (``best_epochs``, ``fold_inner_years``) and the anomaly sums of squares of
their folds (``fold_anom_sst``, for the anomaly R² beside the baselines).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from dlfm_auto.data import PrepareConfig, prepare
from dlfm_auto.models import get_family
from dlfm_auto.study._space import Restricted, Space, feasible_space
from dlfm_auto.study._spec import StudySpec
from dlfm_auto.training import (
    baselines,
    cross_validate,
    group_scores,
    predict,
    r2_mse,
    report_stride,
    train_many,
    train_split,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class NonFiniteScore(ValueError):
    """A trial's models diverged (NaN/inf CV R²): the trial fails, the study continues."""


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


def trial_prep(spec: StudySpec, length: int, site_norm: bool | None = None) -> PrepareConfig:
    """The data settings of a trial with window length ``length``: one home for the match.

    A study that searches L scores every L on the target days valid at its longest searched L
    (matched mode), so trials differ by their model, not by their days. The final, variables
    and baseline computations use this same config, so CV and reports see the same days.
    ``site_norm``: a multi-site trial's drawn per-site standardisation (None: the study's).
    """
    match = spec.prep.match_length
    lengths = getattr(get_family(spec.family), "sequence_lengths", None)
    if not spec.fixed_length and lengths:
        # The longest L the data can fill (the whole choice list unless a short record cut it)
        longest = feasible_space(spec).match_length or max(lengths)
        match = max(longest, match or 0, length)
    extra = {} if site_norm is None else {"site_norm": bool(site_norm)}
    return spec.prep.replace(sequence_length=length, match_length=match, **extra)


def trial_data(spec: StudySpec, trial: Any) -> PrepareConfig:
    """The data settings a finished trial was scored with (its L, its drawn site_norm)."""
    return trial_prep(spec, trial_length(spec, trial), drawn_site_norm(spec, trial.params))


def drawn_site_norm(spec: StudySpec, params: dict[str, Any]) -> bool | None:
    """A trial's drawn ``site_norm`` where the study searches it, else None (the study's)."""
    return bool(params["site_norm"]) if spec.search_site_norm and "site_norm" in params else None


def pick_site_norm(trial: Any, spec: StudySpec) -> bool | None:
    """Draw per-site driver standardisation where a multi-site study searches it."""
    if spec.search_site_norm:
        return bool(trial.suggest_categorical("site_norm", [False, True]))
    return None


def study_baselines(spec: StudySpec, trial: Any) -> dict[str, Any]:
    """Baselines on a finished trial's folds and held-out years (cached by data fingerprint)."""
    return baselines.dataset_baselines(prepare(trial_data(spec, trial)))


def skill_summary(spec: StudySpec, trial: Any) -> dict[str, Any]:
    """``baselines``, ``skill_vs_climatology`` and ``anomaly_r2`` of a finished trial.

    skill vs climatology = 1 - MSE_model / MSE_climatology, both the mean over the CV folds;
    anomaly R² = mean over folds of the model's R² on observed minus climatology, from the
    per-fold anomaly sums of squares the objective records (None on trials of older studies
    that did not record them: their folds' models were chosen differently).
    """
    b = study_baselines(spec, trial)
    cv = {k: dict(v) for k, v in b["cv"].items()}
    mse = trial.user_attrs.get("cv_mse")
    clim = cv.get("climatology", {}).get("cv_mse")
    skill = 1.0 - float(mse) / clim if mse is not None and clim else None
    sst, fmse = trial.user_attrs.get("fold_anom_sst"), trial.user_attrs.get("fold_mse")
    n = trial.user_attrs.get("n_val")
    anom = None
    if sst and fmse and n:
        anom = float(np.mean([baselines.anomaly_r2(m, k, s)
                              for m, k, s in zip(fmse, n, sst, strict=True)]))
    out = {"baselines": cv, "skill_vs_climatology": skill, "anomaly_r2": anom,
           "heldout_baselines": (b.get("heldout") or {}).get("baselines")}
    if b.get("cv_sites"):  # several sites: each baseline's R² per site on the same folds
        out["site_baselines"] = {name: {site: v["r2"] for site, v in per.items()}
                                 for name, per in b["cv_sites"].items()}
    return out


def model_params(spec: StudySpec, trial_params: dict[str, Any]) -> dict[str, Any]:
    """The model parameters a trial trained with, from its Optuna parameters.

    A family's space may derive a model parameter from several Optuna parameters
    (``dynamic_ann``'s ``layer_dims`` from ``n_layers`` and ``units_i``), so a trial's
    ``params`` are not always what ``build`` takes: replaying the space on a ``FixedTrial``
    gives exactly what the objective built. The space draws no window length (a data setting:
    see :func:`pick_length` and :func:`trial_length`). Parameters the space cannot replay (a
    trial of an older space) are used as they are, less their ``sequence_length``.
    """
    try:
        return Objective(spec).params(optuna.trial.FixedTrial(dict(trial_params)))
    except ValueError:
        return {k: v for k, v in trial_params.items() if k not in ("sequence_length", "site_norm")}


def trial_length(spec: StudySpec, trial: Any) -> int:
    """The window length L a finished trial was scored at (recorded by the objective)."""
    return int(trial.user_attrs.get("sequence_length", spec.prep.sequence_length))


def pick_length(trial: Any, spec: StudySpec, params: dict[str, Any]) -> int:
    """The window length L of a trial with model ``params``: the one home of that choice.

    The user's ``--sequence-length`` (and a grid study's L) is used as it is: it may lie
    outside the family's choices (e.g. L=3), so it is never an Optuna parameter. Otherwise L
    is drawn as the Optuna parameter ``sequence_length`` from
    :meth:`~dlfm_auto.models._base.Family.length_choices` (``trial`` is the objective's
    :class:`~dlfm_auto.study._space.Restricted` trial when a short record cut them); a model
    that reads no window (feed "today") draws nothing and gets the study's L (1: none given).
    """
    if not spec.fixed_length:
        choices = get_family(spec.family).length_choices(params)
        if choices:
            return int(trial.suggest_categorical("sequence_length", list(choices)))
    return int(spec.prep.sequence_length)


class Objective:
    """Callable for ``study.optimize``; built from the stored spec by every worker."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        self.family = get_family(spec.family)
        self.stride = report_stride(self.family, spec.max_epochs)
        self.on_best = None  # callback(trial, params, results, dataset) set by the runner
        self.space: Space | None = None  # choices the data can fill (study/_space.py)

    def _restricted(self, trial: optuna.Trial) -> Any:
        """``trial`` with its categorical draws kept to what the study's data can fill."""
        if self.space is not None and self.space.choices:
            return Restricted(trial, self.space.choices)
        return trial

    def params(self, trial: optuna.Trial) -> dict[str, Any]:
        """The model parameters of a trial (its window length is :func:`pick_length`'s)."""
        trial = self._restricted(trial)
        if self.spec.sampler == "grid":
            return suggest_grid(trial, self.spec)
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
        L = pick_length(self._restricted(trial), spec, params)
        # same target days for every searched L
        ds = prepare(trial_prep(spec, L, pick_site_norm(trial, spec)))
        splits = ds.cv_splits()
        common = dict(max_epochs=spec.max_epochs, patience=spec.patience)
        if spec.pruner in ("median", "hyperband"):
            # every epoch of every fold, at step fold * stride + epoch (see module docstring)
            results = cross_validate(self.family, params, splits, report=self._reporter(trial),
                                     seed=spec.seed, stride=self.stride, **common).folds
        elif spec.pruner == "none":  # the folds as one batched model where it applies
            results = train_many(self.family, params, splits,
                                 [spec.seed + i for i in range(len(splits))], **common)
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
        trial.set_user_attr("fold_labels", [s.name for s in splits])
        pooled = self._site_scores(trial, results, splits) if ds.multi_site else None
        trial.set_user_attr("fold_r2", r2)
        trial.set_user_attr("fold_mse", mse)
        # chosen on each fold's inner training year, never on its validation year
        trial.set_user_attr("best_epochs", [int(r.best_epoch) for r in results])
        trial.set_user_attr("fold_inner_years", [
            int(s.train_years[s.inner_val][0]) if s.inner_val is not None and s.inner_val.any()
            else None for s in splits])
        trial.set_user_attr("fold_anom_sst", [baselines.anomaly_sst(s) for s in splits])
        trial.set_user_attr("match_length", ds.config.match_length)
        trial.set_user_attr("n_train", [int(r.n_train) for r in results])
        trial.set_user_attr("n_val", [int(r.n_val) for r in results])
        trial.set_user_attr("sequence_length", L)
        value = {"mean": float(np.mean(r2)), "median": float(np.median(r2)),
                 "pooled": pooled}[spec.cv_score]
        if value is None or not math.isfinite(value):  # a diverged model: this trial fails, the study goes on
            raise NonFiniteScore(f"non-finite CV R² ({r2})")
        trial.set_user_attr("cv_r2_sd", statistics.stdev(r2) if len(r2) > 1 else 0.0)
        trial.set_user_attr("cv_mse", float(np.mean(mse)))
        if self.on_best is not None:
            self.on_best(trial, value, params, results, ds, splits)
        return value

    def _site_scores(self, trial: optuna.Trial, results: list, splits: list) -> float:
        """Several sites: R² per site over the folds' validation parts pooled (with
        ``cv="sites"`` that is each site's own fold: the site when it was held out), their
        median, and R² of all folds' predictions pooled (returned)."""
        obs = np.concatenate([s.y_val for s in splits]).astype(np.float64)
        pred = np.concatenate([predict(self.family, r.model, s.X_val)
                               for r, s in zip(results, splits, strict=True)])
        per = group_scores(obs, pred, np.concatenate([s.val_sites for s in splits]))
        site_r2 = {k: v["r2"] for k, v in per.items()}
        trial.set_user_attr("site_r2", site_r2)
        trial.set_user_attr("site_n", {k: v["n"] for k, v in per.items()})
        trial.set_user_attr("median_site_r2", float(np.median(list(site_r2.values()))))
        pooled = r2_mse(obs, pred)[0]
        trial.set_user_attr("pooled_r2", pooled)
        return pooled

    @staticmethod
    def _reporter(trial: optuna.Trial):
        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        return report

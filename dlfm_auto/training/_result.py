"""What training returns, and the checks made before any training starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlfm_auto._errors import UserError
from dlfm_auto.data import Split


@dataclass
class FoldResult:
    """Validation skill of the returned model on one split.

    ``r2``/``mse`` are for the returned model on the split's validation part, in the data's
    units. ``best_epoch`` is 0-based (epoch for torch, boosting round for XGBoost, 0 for the
    forest) and was chosen on the split's inner validation part (``n_inner`` windows of the
    training years), never on the scored part; without an inner part it is the last epoch
    of the budget. ``best_epoch + 1`` is the budget that reproduces the model.
    ``history`` holds the learning curve: ``epoch``, ``train_loss`` (mean batch loss on
    centred NEE, accumulated during the epoch: no extra pass), ``val_r2`` (the scored part,
    what pruners watch) and ``inner_r2`` (what chose the epoch) when there is an inner part.
    """

    r2: float
    mse: float
    best_epoch: int
    epochs_run: int
    n_train: int
    n_val: int
    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    n_inner: int = 0


@dataclass
class CVResult:
    """Per-fold results of :func:`~dlfm_auto.training.cross_validate` and their means."""

    folds: list[FoldResult]
    split_names: list[str]
    stride: int  # step offset between folds in the reported intermediate values

    @property
    def fold_r2(self) -> list[float]:
        return [float(f.r2) for f in self.folds]

    @property
    def fold_mse(self) -> list[float]:
        return [float(f.mse) for f in self.folds]

    @property
    def mean_r2(self) -> float:
        """The study objective: mean validation R² over the year folds."""
        return float(np.mean(self.fold_r2)) if self.folds else math.nan

    @property
    def mean_mse(self) -> float:
        return float(np.mean(self.fold_mse)) if self.folds else math.nan

    @property
    def seconds(self) -> float:
        return float(sum(f.seconds for f in self.folds))


def r2_from_sse(sse: Any, sst: Any) -> Any:
    """R² = 1 - SSE/SST; NaN when the observations are constant (SST = 0).

    Scalars give a float; arrays (the memory atlas's bootstrap sums) give an array.
    """
    if np.ndim(sse) == 0 and np.ndim(sst) == 0:
        return 1.0 - sse / sst if sst > 0 else math.nan
    sse, sst = np.asarray(sse, dtype=np.float64), np.asarray(sst, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 0, 1.0 - sse / sst, np.nan)


def r2_mse(obs: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """R² (:func:`r2_from_sse`) and MSE, in float64."""
    obs = np.asarray(obs, dtype=np.float64)
    err = np.asarray(pred, dtype=np.float64) - obs
    sse = float(np.sum(err**2))
    sst = float(np.sum((obs - obs.mean()) ** 2)) if len(obs) else 0.0
    return r2_from_sse(sse, sst), sse / max(1, len(obs))


def group_scores(obs: np.ndarray, pred: np.ndarray, groups: np.ndarray
                 ) -> dict[str, dict[str, float]]:
    """R², MSE and count of each group (site) of samples: :func:`r2_mse` on each part."""
    out = {}
    for g in sorted(set(groups.tolist())):
        m = groups == g
        r2, mse = r2_mse(obs[m], pred[m])
        out[str(g)] = {"r2": r2, "mse": mse, "n": int(m.sum())}
    return out


def check_split(family: Any, params: dict[str, Any], split: Split) -> None:
    """Refuse, with a message saying what to change, what would crash or mean nothing.

    Checked before anything is built: too few training windows for two batches (torch) or a
    fit (trees), no validation windows, a window length the family or params cannot take.
    """
    n_train, n_val, L = len(split.y_train), len(split.y_val), split.sequence_length
    need = 2 * int(params.get("batch_size", 64)) if family.kind == "torch" else 2
    if n_train < need:
        raise UserError(
            f"{family.name}: split {split.name} has too few training windows: {n_train} "
            f"windows of {L} days, fewer than the {need} that two batches need; use a shorter "
            "--sequence-length, a smaller batch size, or a site with more years"
        )
    if n_val == 0:
        raise UserError(
            f"{family.name}: split {split.name} has no validation windows of {L} days; "
            "use a shorter --sequence-length or fewer --folds"
        )
    if split.X_train.ndim != 3 or split.X_val.shape[1:] != split.X_train.shape[1:]:
        raise UserError(
            f"{family.name}: split {split.name} has inconsistent windows "
            f"(train {split.X_train.shape}, validation {split.X_val.shape})"
        )
    why = family.capability_error(params, L)
    if why:
        raise UserError(why)

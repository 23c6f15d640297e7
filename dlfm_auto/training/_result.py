"""What training one split returns, and the shared checks before training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlfm_auto._errors import UserError
from dlfm_auto.data import Split


@dataclass
class FoldResult:
    """Validation skill of the returned model (best epoch unless ``restore_best=False``)."""

    r2: float
    mse: float
    best_epoch: int  # 0-based epoch (torch) or boosting round count (xgboost)
    epochs_run: int
    n_train: int
    n_val: int
    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def r2_mse(obs: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    obs = np.asarray(obs, dtype=np.float64)
    err = np.asarray(pred, dtype=np.float64) - obs
    sse = float(np.sum(err**2))
    sst = float(np.sum((obs - obs.mean()) ** 2))
    return (1.0 - sse / sst if sst > 0 else float("nan")), sse / max(1, len(obs))


def check_split(family: Any, params: dict[str, Any], split: Split, batch_size: int = 1) -> None:
    """Capability checks before any training (neuralhydrology style): clear errors, no crash."""
    if len(split.y_train) < max(2, 2 * batch_size if family.kind == "torch" else 2):
        raise UserError(
            f"{family.name}: split {split.name} has {len(split.y_train)} training samples at "
            f"sequence_length={split.sequence_length}; too few (use a shorter sequence length)"
        )
    if len(split.y_val) == 0:
        raise UserError(f"{family.name}: split {split.name} has no validation samples")
    why = family.capability_error(params, split.sequence_length)
    if why:
        raise UserError(why)

"""The unit the trainers consume: one train/validation split of normalised arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalizer:
    """Per-feature mean/std fitted on a split's training part only (no leakage)."""

    mean: np.ndarray  # (f,)
    std: np.ndarray  # (f,)
    feature_names: tuple[str, ...]

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Normalise windows ``X`` of shape (n, L, f) (or (n, f)) to float32."""
        return ((X - self.mean) / self.std).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "feature_names": list(self.feature_names),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(np.asarray(d["mean"]), np.asarray(d["std"]), tuple(d["feature_names"]))


@dataclass(frozen=True)
class Split:
    """One split: inputs normalised with ``norm`` (fitted on the training part); y in raw units.

    ``X_*`` have shape (n, L, f): L days ending on the target day, f features, float32.
    ``y_*`` have shape (n,), daily daylight NEE in the file's units (µmol m-2 s-1).
    """

    name: str  # e.g. "val=2019" or "eval=2019-2021"
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    norm: Normalizer
    val_years: tuple[int, ...]
    train_days: np.ndarray  # datetime64[D] of each training target day
    val_days: np.ndarray  # datetime64[D] of each validation target day
    #: Bool mask over the training part: the inner validation windows that choose the epoch /
    #: boosting rounds (see ``Dataset.inner_mask``); None: nothing inside may choose.
    inner_val: np.ndarray | None = None
    train_years: np.ndarray | None = None  # season year of each training target day
    val_sites: np.ndarray | None = None  # several sites: the site of each validation day

    @property
    def sequence_length(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[2])

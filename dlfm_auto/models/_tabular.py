"""Tree models on windows: the feed turns (n, L, f) into a table, then sklearn-style fit."""

from __future__ import annotations

from typing import Any

import numpy as np

from dlfm_auto.models._base import apply_feed


class TabularModel:
    """A (fitted) estimator plus the feed that produced its table.

    Callers hand it windows like any torch model; the table is built here, so a stored model
    cannot be fed differently from how it was trained.
    """

    def __init__(self, estimator: Any, feed: str) -> None:
        self.estimator = estimator
        self.feed = feed

    def table(self, X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(apply_feed(X, self.feed))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(self.table(X)), dtype=np.float64)

    def __repr__(self) -> str:
        return f"TabularModel({self.estimator!r}, feed={self.feed!r})"

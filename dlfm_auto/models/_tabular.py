"""Tree models on windows: the feed turns (n, L, f) into a table, then sklearn-style fit."""

from __future__ import annotations

from typing import Any

import numpy as np

from dlfm_auto.models._base import to_tabular


class TabularModel:
    """A fitted estimator plus the feed that produced its table."""

    def __init__(self, estimator: Any, feed: str) -> None:
        self.estimator = estimator
        self.feed = feed

    def table(self, X: np.ndarray) -> np.ndarray:
        return to_tabular(X, self.feed)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(self.table(X)), dtype=np.float64)

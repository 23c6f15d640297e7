"""What a model family is: search space, DLFM grid, builder.

A family is one module that creates a :class:`Family`; the registry in ``__init__`` lists
them. Torch families build a :class:`Regressor`, which takes windows (n, L, f) and returns NEE
in the file's units (the target scaling lives in buffers, so a saved state dict is a complete
model). Non-sequence families choose how a window is fed (``feed``), inside the model, so
predictions and gradients work on windows for every family alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import torch
from torch import nn

FEEDS = ("today", "flatten", "stats")


def feed_width(feed: str, n_features: int, seq_len: int) -> int:
    return {"today": n_features, "flatten": n_features * seq_len, "stats": 3 * n_features}[feed]


def to_tabular(X: np.ndarray, feed: str) -> np.ndarray:
    """Windows (n, L, f) -> table (n, k): today's drivers, the flattened window, or stats."""
    if feed == "today":
        return X[:, -1, :]
    if feed == "flatten":
        return X.reshape(len(X), -1)
    if feed == "stats":
        return np.concatenate([X[:, -1, :], X.mean(axis=1), X.var(axis=1)], axis=1)
    raise ValueError(f"unknown feed {feed!r}")


class Feed(nn.Module):
    """The torch twin of :func:`to_tabular` (differentiable, for gradients by lag)."""

    def __init__(self, feed: str) -> None:
        super().__init__()
        self.feed = feed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feed == "today":
            return x[:, -1, :]
        if self.feed == "flatten":
            return x.reshape(x.shape[0], -1)
        return torch.cat([x[:, -1, :], x.mean(dim=1), x.var(dim=1, unbiased=False)], dim=1)


class Regressor(nn.Module):
    """``net`` predicts standardised NEE; this wrapper returns NEE in the data's units."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def set_target_scale(self, mean: float, std: float) -> None:
        self.y_mean.fill_(float(mean))
        self.y_std.fill_(float(std) if std > 0 else 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(-1) * self.y_std + self.y_mean


class LastStep(nn.Module):
    """Recurrent core + linear head on the last time step (many-to-one)."""

    def __init__(self, core: nn.Module, hidden: int) -> None:
        super().__init__()
        self.core = core
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.core(x)
        return self.head(out[:, -1, :]).squeeze(-1)


def suggest_training(trial: optuna.Trial, epochs: tuple[int, ...]) -> dict[str, Any]:
    """The optimiser part every torch family searches."""
    opt = trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw"])
    hi = 3e-2 if opt != "sgd" else 1e-1
    return {
        "optimizer": opt,
        "lr": trial.suggest_float("lr", 1e-4, hi, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "epochs": trial.suggest_categorical("epochs", list(epochs)),
    }


@dataclass(frozen=True)
class Family:
    """A model family. ``grid`` is the DLFM grid, exactly (DESIGN §3)."""

    name: str
    sequence: bool
    kind: str  # "torch" or "tree"
    description: str
    space: Callable[[optuna.Trial], dict[str, Any]]
    dlfm_grid: dict[str, list[Any]]
    builder: Callable[[dict[str, Any], int, int], Any]
    sequence_lengths: tuple[int, ...] = ()  # L choices searched by TPE (matched across them)
    feeds: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 1000
    check: Callable[[dict[str, Any], int], str | None] | None = None

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return self.space(trial)

    def grid(self) -> dict[str, list[Any]]:
        return {k: list(v) for k, v in self.dlfm_grid.items()}

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Params with this family's defaults filled in (grid points omit e.g. optimizer)."""
        return {**self.defaults, **params}

    def build(self, params: dict[str, Any], n_features: int, seq_len: int) -> Any:
        return self.builder(self.resolve(params), n_features, seq_len)

    def capability_error(self, params: dict[str, Any], seq_len: int) -> str | None:
        """Why this family cannot run ``params`` on windows of ``seq_len`` (None if it can)."""
        return self.check(self.resolve(params), seq_len) if self.check else None

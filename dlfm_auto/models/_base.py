"""What a model family is: search space, DLFM grid, builder.

A family is one module that creates a :class:`Family`; the registry in ``__init__`` lists
them. Torch families build a :class:`Regressor`, which takes windows (n, L, f) and returns NEE
in the file's units (the target scaling lives in buffers, so a saved state dict is a complete
model). Non-sequence families choose how a window is fed (``feed``) inside the model, so
predictions and input gradients work on windows for every family alike (the variables report
differentiates with respect to each driver at each lag, whatever the family).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import optuna
import torch
from torch import nn

from dlfm_auto.models import _lstm_cpu

#: How a non-sequence family sees a window (n, L, f): ``today`` = X[:, -1, :] (DLFM parity,
#: the L = 1 semantics), ``flatten`` = every day's drivers, ``stats`` = today + window mean +
#: window variance (per driver).
FEEDS = ("today", "flatten", "stats")

#: Optimisers every torch family offers. DLFM trained with SGD (momentum 0); grid points carry
#: no optimizer and get "sgd" from the family defaults.
OPTIMIZERS = ("sgd", "adam", "adamw")

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def feed_width(feed: str, n_features: int, seq_len: int) -> int:
    """Number of columns :func:`apply_feed` produces."""
    widths = {"today": n_features, "flatten": n_features * seq_len, "stats": 3 * n_features}
    if feed not in widths:
        raise ValueError(f"unknown feed {feed!r}; one of {', '.join(FEEDS)}")
    return widths[feed]


def apply_feed(X: ArrayT, feed: str) -> ArrayT:
    """Windows (n, L, f) -> table (n, k), for numpy arrays (trees) and tensors (torch) alike.

    The one place that defines the feeds, so tree tables and the differentiable torch input
    layer cannot drift apart. Variance is the population variance (ddof 0) in both.
    """
    if feed == "today":
        return X[:, -1, :]
    if feed == "flatten":
        return X.reshape(X.shape[0], -1)
    if feed == "stats":
        if isinstance(X, torch.Tensor):
            return torch.cat([X[:, -1, :], X.mean(dim=1), X.var(dim=1, unbiased=False)], dim=1)
        return np.concatenate([X[:, -1, :], X.mean(axis=1), X.var(axis=1)], axis=1)
    raise ValueError(f"unknown feed {feed!r}; one of {', '.join(FEEDS)}")


class Feed(nn.Module):
    """The torch input layer of non-sequence families: :func:`apply_feed` as a module."""

    def __init__(self, feed: str) -> None:
        super().__init__()
        feed_width(feed, 1, 1)  # validate early, at build time
        self.feed = feed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_feed(x, self.feed)

    def extra_repr(self) -> str:
        return f"feed={self.feed!r}"


class Regressor(nn.Module):
    """``net`` predicts scaled NEE; this wrapper returns NEE in the data's units.

    The trainer fits ``net`` on ``(y - y_mean) / y_std`` and stores both here, so ``model(x)``
    and a reloaded state dict give NEE. (It centres only, ``y_std = 1``: see the trainer.)
    """

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
    """Recurrent core (batch-first nn.RNN/nn.LSTM) + linear head on the last day."""

    def __init__(self, core: nn.Module, hidden: int) -> None:
        super().__init__()
        self.core = core
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Training a small LSTM on the CPU goes through the numba kernel (same maths, ~2x
        # faster per step); evaluation, input gradients and every other case use the module.
        if self.training and torch.is_grad_enabled() and _lstm_cpu.applies(self.core, x):
            return self.head(_lstm_cpu.lstm_last_step(self.core, x)).squeeze(-1)
        out, _ = self.core(x)
        return self.head(out[:, -1, :]).squeeze(-1)


def suggest_training(trial: optuna.Trial, epochs: tuple[int, ...]) -> dict[str, Any]:
    """The optimiser part every torch family searches (TPE).

    One fixed range per parameter, whatever the optimiser: TPE models each parameter from the
    values of earlier trials, and ranges that change with another parameter would mix scales.
    """
    return {
        "optimizer": trial.suggest_categorical("optimizer", list(OPTIMIZERS)),
        "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "epochs": trial.suggest_categorical("epochs", list(epochs)),
    }


def suggest_recurrent(trial: optuna.Trial, epochs: tuple[int, ...]) -> dict[str, Any]:
    """Size and depth of an nn.RNN/nn.LSTM family, plus its training part.

    The window length is not drawn here: the study's objective picks it from
    :meth:`Family.length_choices` (it may be the user's fixed L instead).
    """
    layers = trial.suggest_int("num_layers", 1, 3)
    return {
        "hidden_size": trial.suggest_int("hidden_size", 4, 64, log=True),
        "num_layers": layers,
        # torch's recurrent layers drop out between layers only: one layer has nothing to drop.
        "dropout": trial.suggest_float("dropout", 0.0, 0.3) if layers > 1 else 0.0,
        **suggest_training(trial, epochs),
    }


def suggest_feed(trial: optuna.Trial) -> dict[str, Any]:
    """Feed of a non-sequence family (its window length, if the feed uses one, is the
    objective's: see :meth:`Family.length_choices`)."""
    return {"feed": trial.suggest_categorical("feed", list(FEEDS))}


@dataclass(frozen=True)
class Family:
    """A model family: search space, DLFM grid (exactly as the DLFM test bed) and builder.

    ``sequence``: consumes (n, L, f) windows as sequences (RNN, LSTM, xLSTM); otherwise the
    window goes through a ``feed`` (``feeds`` lists the allowed ones, ``defaults["feed"]`` is
    the grid's, "today"). ``kind`` is "torch" (trained by epochs) or "tree" (fitted by
    sklearn-style ``fit``). ``max_epochs`` is the largest epoch budget of the family's space
    (boosting rounds for XGBoost, 1 for the forest): the stride between folds when reporting.
    """

    name: str
    sequence: bool
    kind: str  # "torch" or "tree"
    description: str
    space: Callable[[optuna.Trial], dict[str, Any]]
    dlfm_grid: dict[str, list[Any]]
    builder: Callable[[dict[str, Any], int, int], Any]
    sequence_lengths: tuple[int, ...] = ()  # L choices searched by TPE (see length_choices)
    feeds: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 1000
    check: Callable[[dict[str, Any], int], str | None] | None = None

    @property
    def feed(self) -> str | None:
        """The default feed (the grid's, DLFM parity); None for sequence families."""
        return None if self.sequence else self.defaults.get("feed", "today")

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """TPE/random search space of the model parameters (never the window length L)."""
        return self.space(trial)

    def length_choices(self, params: dict[str, Any]) -> tuple[int, ...]:
        """The window lengths L a model with ``params`` can use, for a search to choose from.

        A sequence family reads every window length of its ``sequence_lengths``; a
        non-sequence family the same when its feed uses the window, and none (``()``) when the
        feed is "today". L is a data setting: the study's objective picks it (one home).
        """
        if self.sequence or self.resolve(params).get("feed", "today") != "today":
            return tuple(self.sequence_lengths)
        return ()

    def grid(self) -> dict[str, list[Any]]:
        """The DLFM grid (a fresh copy: callers may mutate it)."""
        return {k: list(v) for k, v in self.dlfm_grid.items()}

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Params with this family's defaults filled in (grid points omit e.g. optimizer)."""
        return {**self.defaults, **params}

    def build(self, params: dict[str, Any], n_features: int, seq_len: int) -> Any:
        """An untrained model for windows of ``seq_len`` days x ``n_features`` drivers."""
        return self.builder(self.resolve(params), n_features, seq_len)

    def capability_error(self, params: dict[str, Any], seq_len: int) -> str | None:
        """Why this family cannot run ``params`` on windows of ``seq_len`` (None if it can)."""
        p = self.resolve(params)
        if seq_len < 1:
            return f"{self.name}: sequence length must be >= 1, got {seq_len}"
        want = p.get("sequence_length")
        if want is not None and int(want) != seq_len:
            return (f"{self.name}: params ask for sequence_length={want} but the data has "
                    f"windows of {seq_len} days; prepare the data with --sequence-length {want}")
        feed = p.get("feed")
        if not self.sequence and feed is not None and feed not in self.feeds:
            return f"{self.name}: unknown feed {feed!r}; one of {', '.join(self.feeds)}"
        return self.check(p, seq_len) if self.check else None

"""``ann``: the DLFM FirstANN, one hidden layer (ReLU) and a linear output."""

from __future__ import annotations

from typing import Any

import optuna
from torch import nn

from dlfm_auto.models._base import (
    FEEDS,
    Family,
    Feed,
    Regressor,
    feed_width,
    suggest_feed,
    suggest_training,
)

LENGTHS = (7, 14, 30)  # window lengths searched when the feed uses the window


def _space(trial: optuna.Trial) -> dict[str, Any]:
    p = suggest_feed(trial)
    p["layer_size"] = trial.suggest_int("layer_size", 4, 64, log=True)
    return {**p, **suggest_training(trial, (200, 500, 800))}


def _build(p: dict[str, Any], n_features: int, seq_len: int) -> Regressor:
    width = feed_width(p["feed"], n_features, seq_len)
    size = int(p["layer_size"])
    return Regressor(nn.Sequential(Feed(p["feed"]), nn.Linear(width, size), nn.ReLU(),
                                   nn.Linear(size, 1)))


FAMILY = Family(
    name="ann", sequence=False, kind="torch",
    description="one hidden layer (DLFM FirstANN)",
    space=_space,
    dlfm_grid={"layer_size": [8], "batch_size": [64], "epochs": [800], "lr": [1e-3],
               "weight_decay": [0.01]},
    builder=_build, sequence_lengths=LENGTHS, feeds=FEEDS,
    defaults={"optimizer": "sgd", "feed": "today"}, max_epochs=800,
)

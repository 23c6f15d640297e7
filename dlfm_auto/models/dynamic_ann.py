"""``dynamic_ann``: configurable hidden layers, activation and dropout (DLFM DynamicANN)."""

from __future__ import annotations

from typing import Any

import optuna
from torch import nn

from dlfm_auto.models._base import FEEDS, Family, Feed, Regressor, feed_width, suggest_training

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def parse_dims(text: str | list | tuple) -> list[int]:
    """Layer dims are stored as ``"10-6"`` (Optuna categoricals cannot hold tuples)."""
    if isinstance(text, list | tuple):
        return [int(x) for x in text]
    return [int(x) for x in str(text).split("-") if x]


def _space(trial: optuna.Trial) -> dict[str, Any]:
    feed = trial.suggest_categorical("feed", list(FEEDS))
    n = trial.suggest_int("n_layers", 1, 3)
    dims = [trial.suggest_int(f"units_{i}", 4, 64, log=True) for i in range(n)]
    p = {"feed": feed, "layer_dims": "-".join(map(str, dims)),
         "activation": trial.suggest_categorical("activation", list(ACTIVATIONS)),
         "dropout": trial.suggest_float("dropout", 0.0, 0.3)}
    if feed != "today":
        p["sequence_length"] = trial.suggest_categorical("sequence_length", [7, 14, 30])
    return {**p, **suggest_training(trial, (200, 400, 800))}


def _build(p: dict[str, Any], n_features: int, seq_len: int) -> Regressor:
    layers: list[nn.Module] = [Feed(p["feed"])]
    width = feed_width(p["feed"], n_features, seq_len)
    for d in parse_dims(p["layer_dims"]):
        layers += [nn.Linear(width, d), ACTIVATIONS[p["activation"]](), nn.Dropout(p["dropout"])]
        width = d
    layers.append(nn.Linear(width, 1))
    return Regressor(nn.Sequential(*layers))


FAMILY = Family(
    name="dynamic_ann", sequence=False, kind="torch",
    description="configurable multi-layer perceptron (DLFM DynamicANN)",
    space=_space,
    dlfm_grid={"layer_dims": ["6-4", "10-6"], "epochs": [400, 800], "batch_size": [64],
               "lr": [1e-2, 1e-3], "weight_decay": [0, 1e-3], "dropout": [0, 1e-3]},
    builder=_build, sequence_lengths=(7, 14, 30), feeds=FEEDS,
    defaults={"optimizer": "sgd", "feed": "today", "activation": "relu"}, max_epochs=800,
)

"""``dynamic_ann``: configurable hidden layers, activation and dropout (DLFM DynamicANN)."""

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

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
LENGTHS = (7, 14, 30)


def parse_dims(text: str | list | tuple) -> list[int]:
    """Layer dims are stored as ``"10-6"``: Optuna categoricals cannot hold tuples."""
    if isinstance(text, list | tuple):
        return [int(x) for x in text]
    return [int(x) for x in str(text).split("-") if x]


def _space(trial: optuna.Trial) -> dict[str, Any]:
    p = suggest_feed(trial)
    n = trial.suggest_int("n_layers", 1, 3)
    # Per-layer widths as separate int parameters so TPE can model each; joined for build().
    dims = [trial.suggest_int(f"units_{i}", 4, 64, log=True) for i in range(n)]
    p.update(layer_dims="-".join(map(str, dims)),
             activation=trial.suggest_categorical("activation", list(ACTIVATIONS)),
             dropout=trial.suggest_float("dropout", 0.0, 0.3))
    return {**p, **suggest_training(trial, (200, 400, 800))}


def _build(p: dict[str, Any], n_features: int, seq_len: int) -> Regressor:
    layers: list[nn.Module] = [Feed(p["feed"])]
    width = feed_width(p["feed"], n_features, seq_len)
    for d in parse_dims(p["layer_dims"]):
        layers += [nn.Linear(width, d), ACTIVATIONS[p["activation"]](),
                   nn.Dropout(float(p["dropout"]))]
        width = d
    layers.append(nn.Linear(width, 1))
    return Regressor(nn.Sequential(*layers))


def _check(p: dict[str, Any], seq_len: int) -> str | None:
    if p.get("activation") not in ACTIVATIONS:
        return (f"dynamic_ann: unknown activation {p.get('activation')!r}; "
                f"one of {', '.join(ACTIVATIONS)}")
    if not parse_dims(p.get("layer_dims", "")):
        return "dynamic_ann: layer_dims must name at least one layer, e.g. 10-6"
    return None


FAMILY = Family(
    name="dynamic_ann", sequence=False, kind="torch",
    description="configurable multi-layer perceptron (DLFM DynamicANN)",
    space=_space,
    dlfm_grid={"layer_dims": ["6-4", "10-6"], "epochs": [400, 800], "batch_size": [64],
               "lr": [1e-2, 1e-3], "weight_decay": [0, 1e-3], "dropout": [0, 1e-3]},
    builder=_build, sequence_lengths=LENGTHS, feeds=FEEDS,
    defaults={"optimizer": "sgd", "feed": "today", "activation": "relu", "dropout": 0.0},
    max_epochs=800, check=_check,
)

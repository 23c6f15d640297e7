"""``lstm``: nn.LSTM on the daily window, head on the last day (DLFM LSTM)."""

from __future__ import annotations

from typing import Any

import optuna
from torch import nn

from dlfm_auto.models._base import Family, LastStep, Regressor, suggest_training

LENGTHS = (7, 14, 30, 60, 90)


def _space(trial: optuna.Trial) -> dict[str, Any]:
    layers = trial.suggest_int("num_layers", 1, 3)
    return {
        "sequence_length": trial.suggest_categorical("sequence_length", list(LENGTHS)),
        "hidden_size": trial.suggest_int("hidden_size", 4, 64, log=True),
        "num_layers": layers,
        "dropout": trial.suggest_float("dropout", 0.0, 0.3) if layers > 1 else 0.0,
        **suggest_training(trial, (300, 1000, 2200)),
    }


def _build(p: dict[str, Any], n_features: int, seq_len: int) -> Regressor:
    core = nn.LSTM(n_features, p["hidden_size"], num_layers=p["num_layers"], batch_first=True,
                   dropout=p["dropout"] if p["num_layers"] > 1 else 0.0)
    return Regressor(LastStep(core, p["hidden_size"]))


FAMILY = Family(
    name="lstm", sequence=True, kind="torch", description="LSTM (DLFM LSTM)",
    space=_space,
    dlfm_grid={"hidden_size": [8, 15], "num_layers": [2, 3], "epochs": [500, 2200],
               "batch_size": [64], "lr": [1e-2, 1e-3], "weight_decay": [0, 1e-3],
               "dropout": [0, 1e-3]},
    builder=_build, sequence_lengths=LENGTHS, defaults={"optimizer": "sgd", "dropout": 0.0},
    max_epochs=2200,
)

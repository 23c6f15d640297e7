"""``lstm``: nn.LSTM on the daily window, linear head on the last day (DLFM LSTM)."""

from __future__ import annotations

from typing import Any

import optuna
from torch import nn

from dlfm_auto.models._base import Family, LastStep, Regressor, suggest_recurrent

LENGTHS = (7, 14, 30, 60, 90)


def _space(trial: optuna.Trial) -> dict[str, Any]:
    return suggest_recurrent(trial, (300, 1000, 2200))


def _build(p: dict[str, Any], n_features: int, seq_len: int) -> Regressor:
    layers = int(p["num_layers"])
    core = nn.LSTM(n_features, int(p["hidden_size"]), num_layers=layers, batch_first=True,
                   dropout=float(p["dropout"]) if layers > 1 else 0.0)
    return Regressor(LastStep(core, int(p["hidden_size"])))


FAMILY = Family(
    name="lstm", sequence=True, kind="torch", description="LSTM (DLFM LSTM)",
    space=_space,
    dlfm_grid={"hidden_size": [8, 15], "num_layers": [2, 3], "epochs": [500, 2200],
               "batch_size": [64], "lr": [1e-2, 1e-3], "weight_decay": [0, 1e-3],
               "dropout": [0, 1e-3]},
    builder=_build, sequence_lengths=LENGTHS, defaults={"optimizer": "sgd", "dropout": 0.0},
    max_epochs=2200,
)

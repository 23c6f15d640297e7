"""``rnn``: an Elman RNN on the daily window, head on the last day."""

from __future__ import annotations

from typing import Any

import optuna
from torch import nn

from dlfm_auto.models._base import Family, LastStep, Regressor, suggest_training

LENGTHS = (7, 14, 30, 60, 90)


def _space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "sequence_length": trial.suggest_categorical("sequence_length", list(LENGTHS)),
        "hidden_size": trial.suggest_int("hidden_size", 4, 64, log=True),
        "num_layers": trial.suggest_int("num_layers", 1, 3),
        **suggest_training(trial, (300, 1000, 2000)),
    }


def _build(p: dict[str, Any], n_features: int, seq_len: int) -> Regressor:
    core = nn.RNN(n_features, p["hidden_size"], num_layers=p["num_layers"], batch_first=True,
                  nonlinearity="tanh")
    return Regressor(LastStep(core, p["hidden_size"]))


FAMILY = Family(
    name="rnn", sequence=True, kind="torch", description="Elman RNN (DLFM RNN)",
    space=_space,
    dlfm_grid={"hidden_size": [15], "num_layers": [1], "epochs": [2000], "batch_size": [64],
               "lr": [1e-3], "weight_decay": [0.01]},
    builder=_build, sequence_lengths=LENGTHS, defaults={"optimizer": "sgd"}, max_epochs=2000,
)

"""Model families: DLFM grids exactly, search spaces, builders, registry errors."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest
import torch

from dlfm_auto import UserError
from dlfm_auto.models import FAMILIES, get_family, to_tabular

# DESIGN §3, written out independently of the family modules.
DLFM_GRIDS = {
    "ann": {"layer_size": [8], "batch_size": [64], "epochs": [800], "lr": [1e-3],
            "weight_decay": [0.01]},
    "dynamic_ann": {"layer_dims": ["6-4", "10-6"], "epochs": [400, 800], "batch_size": [64],
                    "lr": [1e-2, 1e-3], "weight_decay": [0, 1e-3], "dropout": [0, 1e-3]},
    "rnn": {"hidden_size": [15], "num_layers": [1], "epochs": [2000], "batch_size": [64],
            "lr": [1e-3], "weight_decay": [0.01]},
    "lstm": {"hidden_size": [8, 15], "num_layers": [2, 3], "epochs": [500, 2200],
             "batch_size": [64], "lr": [1e-2, 1e-3], "weight_decay": [0, 1e-3],
             "dropout": [0, 1e-3]},
    "xlstm": {"epochs": [300, 600, 1000], "batch_size": [64], "lr": [1e-3, 1e-2],
              "weight_decay": [0, 1e-3]},
    "xgboost": {"learning_rate": [0.01], "n_estimators": [1000, 10000]},
    "random_forest": {"n_estimators": [1000, 2000], "max_depth": [10, 30]},
}
COUNTS = {"ann": 1, "dynamic_ann": 32, "rnn": 1, "lstm": 64, "xlstm": 12, "xgboost": 2,
          "random_forest": 4}


def test_registry_has_the_seven_families():
    assert set(FAMILIES) == set(DLFM_GRIDS)


@pytest.mark.parametrize("name", sorted(DLFM_GRIDS))
def test_grid_is_exactly_dlfm(name):
    grid = get_family(name).grid()
    assert grid == DLFM_GRIDS[name]
    points = list(itertools.product(*grid.values()))
    assert len(points) == COUNTS[name] == len(set(points))


@pytest.mark.parametrize("name", sorted(DLFM_GRIDS))
def test_suggest_then_build_forward(name):
    fam = get_family(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(3):
        params = fam.suggest(study.ask())
        L = int(params.pop("sequence_length", 5))
        model = fam.build(params, 3, L)
        X = np.random.default_rng(0).normal(size=(7, L, 3)).astype(np.float32)
        if fam.kind == "torch":
            out = model(torch.from_numpy(X))
            assert out.shape == (7,)
        else:
            assert model.table(X).shape[0] == 7
    if fam.sequence:
        assert fam.sequence_lengths and max(fam.sequence_lengths) >= 30


def test_search_spaces_are_log_scaled_where_it_matters():
    trial = optuna.create_study().ask()
    get_family("lstm").suggest(trial)
    d = trial.distributions
    assert d["lr"].log and d["weight_decay"].log
    assert isinstance(d["hidden_size"], optuna.distributions.IntDistribution)
    assert set(d["optimizer"].choices) == {"sgd", "adam", "adamw"}


def test_unknown_family_lists_close_matches():
    with pytest.raises(UserError, match="closest: lstm"):
        get_family("lstn")
    with pytest.raises(UserError, match="xgboost"):
        get_family("xgb")


def test_feeds():
    X = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3)
    np.testing.assert_array_equal(to_tabular(X, "today"), X[:, -1])
    assert to_tabular(X, "flatten").shape == (2, 12)
    stats = to_tabular(X, "stats")
    np.testing.assert_allclose(stats[:, 3:6], X.mean(1))
    np.testing.assert_allclose(stats[:, 6:], X.var(1))

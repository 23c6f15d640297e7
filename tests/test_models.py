"""Model families: DLFM grids exactly as the DLFM test bed, search spaces, builders, registry."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest
import torch

from dlfm_auto import UserError
from dlfm_auto.models import FAMILIES, FEEDS, apply_feed, get_family
from dlfm_auto.models.dynamic_ann import parse_dims
from dlfm_auto.models.xlstm import slstm_backend, slstm_positions

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The DLFM grids, transcribed by hand: the parity target, not derived from the code under test.
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
GRID_SIZES = {"ann": 1, "dynamic_ann": 32, "rnn": 1, "lstm": 64, "xlstm": 12, "xgboost": 2,
              "random_forest": 4}
SEQUENCE = {"rnn", "lstm", "xlstm"}
TORCH = {"ann", "dynamic_ann", "rnn", "lstm", "xlstm"}


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = sorted(grid)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(grid[k] for k in keys))]


def test_registry_lists_every_family_once() -> None:
    assert set(FAMILIES) == set(DLFM_GRIDS)
    for name, fam in FAMILIES.items():
        assert fam.name == name
        assert fam.sequence == (name in SEQUENCE)
        assert fam.kind == ("torch" if name in TORCH else "tree")
        assert get_family(name) is fam


@pytest.mark.parametrize("name", sorted(DLFM_GRIDS))
def test_grid_is_the_dlfm_grid_exactly(name: str) -> None:
    grid = get_family(name).grid()
    assert grid == DLFM_GRIDS[name]
    points = grid_points(grid)
    assert len(points) == GRID_SIZES[name]
    assert len({tuple(sorted(p.items())) for p in points}) == GRID_SIZES[name]  # distinct


def test_grid_returns_a_copy() -> None:
    fam = get_family("lstm")
    fam.grid()["lr"].append(1.0)
    assert fam.grid()["lr"] == [1e-2, 1e-3]


@pytest.mark.parametrize("name", sorted(DLFM_GRIDS))
def test_grid_points_are_dlfm_training(name: str) -> None:
    """Grid points omit optimizer/feed: they resolve to DLFM's SGD and today's drivers."""
    fam = get_family(name)
    for point in grid_points(fam.grid()):
        p = fam.resolve(point)
        if fam.kind == "torch":
            assert p["optimizer"] == "sgd"
        if not fam.sequence:
            assert p["feed"] == "today" and fam.feed == "today"
        assert fam.capability_error(point, 30) is None


@pytest.mark.parametrize("name", sorted(DLFM_GRIDS))
def test_grid_param_names_are_search_space_names(name: str) -> None:
    """A grid study and a TPE study of one family must store comparable parameters."""
    fam = get_family(name)
    names: set[str] = set()
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    for _ in range(40):
        names |= set(fam.suggest(study.ask()))
    names |= set(fam.defaults)
    if name == "dynamic_ann":
        names.add("layer_dims")
    missing = set(fam.grid()) - names
    assert not missing, f"grid names not in the search space: {missing}"


def _forward(fam, params: dict, n_features: int, L: int) -> np.ndarray:
    model = fam.build(params, n_features, L)
    X = np.random.default_rng(0).normal(size=(5, L, n_features)).astype(np.float32)
    if fam.kind == "torch":
        with torch.no_grad():
            return model(torch.from_numpy(X)).numpy()
    y = np.arange(5, dtype=float)
    p = {**fam.resolve(params), "n_estimators": 3}
    est = fam.build(p, n_features, L)
    est.estimator.fit(est.table(X), y)
    return est.predict(X)


@pytest.mark.parametrize("name", sorted(DLFM_GRIDS))
def test_suggest_builds_a_working_model(name: str) -> None:
    fam = get_family(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(4 if name == "xlstm" else 8):
        trial = study.ask()
        params = fam.suggest(trial)
        choices = fam.length_choices(params)
        L = trial.suggest_categorical("sequence_length", list(choices)) if choices else 1
        assert fam.capability_error(params, L) is None, params
        out = _forward(fam, params, 3, L)
        assert out.shape == (5,) and np.all(np.isfinite(out))
        study.tell(trial, 0.0)


def test_suggest_with_a_plain_ask() -> None:
    """The brief's entry point: ``optuna.create_study().ask()`` (default TPE sampler)."""
    for name, fam in FAMILIES.items():
        params = fam.suggest(optuna.create_study().ask())
        assert params, name


@pytest.mark.parametrize("name", sorted(DLFM_GRIDS))
def test_first_grid_point_builds(name: str) -> None:
    fam = get_family(name)
    out = _forward(fam, grid_points(fam.grid())[0], 3, 14)
    assert out.shape == (5,)


@pytest.mark.parametrize("name", sorted(TORCH))
def test_search_space_shape(name: str) -> None:
    """Log-scale lr and weight decay, the three optimisers, L searchable where it matters.

    The space itself never draws L (the objective does, from ``length_choices``).
    """
    fam = get_family(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    seen_opt, seen_L = set(), set()
    for _ in range(60):
        trial = study.ask()
        p = fam.suggest(trial)
        d = trial.distributions
        assert d["lr"].log and d["weight_decay"].log
        seen_opt.add(p["optimizer"])
        assert "sequence_length" not in p and "sequence_length" not in trial.params
        choices = fam.length_choices(p)
        if fam.sequence:
            assert choices == fam.sequence_lengths
        else:
            assert bool(choices) == (p["feed"] != "today")
            assert not choices or choices == fam.sequence_lengths
        seen_L |= set(choices)
        study.tell(trial, 0.0)
    assert seen_opt == {"sgd", "adam", "adamw"}
    assert seen_L <= set(fam.sequence_lengths) and len(seen_L) > 1
    if name in ("lstm", "rnn"):
        assert fam.sequence_lengths == (7, 14, 30, 60, 90)


def test_unknown_family_names_close_matches() -> None:
    with pytest.raises(UserError, match="closest: lstm"):
        get_family("lstn")
    with pytest.raises(UserError, match="xgboost"):
        get_family("xgb")
    with pytest.raises(UserError, match="unknown model family 'xgb"):
        get_family("xgb00st")
    with pytest.raises(UserError, match="available"):
        get_family("zzzz")


@pytest.mark.parametrize("feed", FEEDS)
def test_feed_transform_numpy_and_torch_agree(feed: str) -> None:
    X = np.random.default_rng(3).normal(size=(4, 6, 3)).astype(np.float32)
    a = apply_feed(X, feed)
    b = apply_feed(torch.from_numpy(X), feed).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(apply_feed(X, "today"), X[:, -1, :])
    assert a.shape == (4, {"today": 3, "flatten": 18, "stats": 9}[feed])


def test_unknown_feed_is_refused() -> None:
    fam = get_family("ann")
    assert "feed" in fam.capability_error({"feed": "weekly"}, 7)
    with pytest.raises(ValueError):
        apply_feed(np.zeros((1, 2, 3)), "weekly")


def test_torch_models_return_data_units() -> None:
    """The target scale lives in buffers: a reloaded state dict gives NEE, not z-scores."""
    fam = get_family("ann")
    m = fam.build(grid_points(fam.grid())[0], 3, 1)
    m.set_target_scale(-4.0, 5.0)
    m2 = fam.build(grid_points(fam.grid())[0], 3, 1)
    m2.load_state_dict(m.state_dict())
    x = torch.zeros(2, 1, 3)
    with torch.no_grad():
        np.testing.assert_allclose(m(x).numpy(), m2(x).numpy())
        z = m.net(x).reshape(-1).numpy()
        np.testing.assert_allclose(m(x).numpy(), z * 5.0 - 4.0, rtol=1e-6)


def test_dynamic_ann_dims() -> None:
    assert parse_dims("10-6") == [10, 6] and parse_dims((6, 4)) == [6, 4]
    fam = get_family("dynamic_ann")
    m = fam.build({"layer_dims": "10-6", "lr": 0.1, "epochs": 1, "batch_size": 64}, 3, 1)
    widths = [mod.out_features for mod in m.net if isinstance(mod, torch.nn.Linear)]
    assert widths == [10, 6, 1]


def test_xlstm_blocks_and_constraints() -> None:
    fam = get_family("xlstm")
    assert slstm_positions("mlstm", 3) == [] and slstm_positions("slstm", 2) == [0, 1]
    assert slstm_positions("both", 3) == [1]
    if not torch.cuda.is_available():
        assert slstm_backend() == "vanilla"
    assert "divisible" in fam.capability_error({"embedding_dim": 10, "num_heads": 4}, 7)
    assert "context_length" in fam.capability_error({"context_length": 7}, 14)
    assert fam.capability_error({"context_length": 14}, 14) is None
    # Window length 1 and the default (both: mLSTM then sLSTM) build and run.
    for L in (1, 9):
        assert _forward(fam, {}, 2, L).shape == (5,)


def test_sequence_length_mismatch_is_reported() -> None:
    msg = get_family("lstm").capability_error({"sequence_length": 30}, 14)
    assert msg and "sequence_length=30" in msg

"""The trainer: every family learns, seeds reproduce, pruning hooks, capability errors."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from conftest import UMB, needs_shared, simple_site, write_flux_csv

from dlfm_auto import UserError
from dlfm_auto.data import Normalizer, PrepareConfig, Split, prepare, write_demo_site
from dlfm_auto.models import FAMILIES, get_family
from dlfm_auto.training import predict, train_split

QUICK = {"ann": 3, "dynamic_ann": 3, "rnn": 2, "lstm": 2, "xlstm": 1, "xgboost": 50,
         "random_forest": 20}


def synthetic_split(n: int = 600, L: int = 5, seed: int = 0, inner: int = 150) -> Split:
    """y = 2 x0(today) - x1(3 days ago) + noise: learnable by every family.

    The last ``inner`` training windows are the inner validation part (what chooses epochs).
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + 200, L, 2)).astype(np.float32)
    y = (2 * X[:, -1, 0] - X[:, -4, 1] + 0.1 * rng.normal(size=n + 200)).astype(np.float32)
    days = np.arange(n + 200).astype("datetime64[D]")
    mask = np.zeros(n, dtype=bool)
    mask[n - inner:] = True
    return Split("val=2000", X[:n], y[:n], X[n:], y[n:],
                 Normalizer(np.zeros(2), np.ones(2), ("a", "b")), (2000,), days[:n], days[n:],
                 inner_val=mask if inner else None)


def first_point(name: str) -> dict:
    return {k: v[0] for k, v in get_family(name).grid().items()}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_trains_on_synthetic(name):
    fam = get_family(name)
    params = first_point(name)
    if name in ("xgboost", "random_forest", "ann", "dynamic_ann"):
        params["feed"] = "flatten"  # the signal needs the lag
    if fam.kind == "torch":
        params.update(optimizer="adam", lr=0.01, batch_size=64)
    res = train_split(fam, params, synthetic_split(), max_epochs=QUICK[name] * 5, seed=0)
    assert math.isfinite(res.r2) and res.n_val == 200
    if name != "xlstm":
        assert res.r2 > 0.5, res.r2
    pred = predict(fam, res.model, synthetic_split().X_val)
    assert pred.shape == (200,) and np.isfinite(pred).all()


def test_seed_reproduces_and_differs():
    fam, split = get_family("lstm"), synthetic_split()
    p = {**first_point("lstm"), "optimizer": "adam"}
    a = train_split(fam, p, split, max_epochs=3, seed=4)
    b = train_split(fam, p, split, max_epochs=3, seed=4)
    c = train_split(fam, p, split, max_epochs=3, seed=5)
    assert a.r2 == b.r2 and a.history == b.history
    assert a.r2 != c.r2


def test_max_epochs_caps_and_report_is_called():
    calls = []
    res = train_split(get_family("ann"), first_point("ann"), synthetic_split(), max_epochs=4,
                      report=lambda step, r2: calls.append((step, r2)))
    assert res.epochs_run == 4 and [c[0] for c in calls] == [0, 1, 2, 3]


def test_pruned_propagates():
    def report(step, r2):
        if step == 1:
            raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        train_split(get_family("ann"), first_point("ann"), synthetic_split(), max_epochs=5,
                    report=report)


def test_early_stopping_restores_best_epoch():
    p = {**first_point("ann"), "optimizer": "adam", "lr": 0.05}
    res = train_split(get_family("ann"), p, synthetic_split(), max_epochs=200, patience=3)
    assert res.epochs_run < 200
    # chosen on the inner part (training windows); the validation part is only scored
    assert res.best_epoch == int(np.argmax(res.history["inner_r2"]))
    assert res.r2 == pytest.approx(res.history["val_r2"][res.best_epoch], abs=1e-4)
    assert res.n_inner == 150 and res.n_train == 450


def test_too_few_samples_and_incompatible_params_are_user_errors():
    s = synthetic_split(n=40)
    with pytest.raises(UserError, match="too few"):
        train_split(get_family("lstm"), first_point("lstm"), s, max_epochs=1)
    with pytest.raises(UserError, match="divisible"):
        train_split(get_family("xlstm"), {**first_point("xlstm"), "embedding_dim": 10,
                                          "num_heads": 4}, synthetic_split(), max_epochs=1)


def test_sequence_length_the_data_cannot_support(tmp_path):
    df = simple_site(days=3 * 365)
    day = df.index.floor("D")
    df.loc[day.isin(day.unique()[::40]) | day.isin(day.unique()[1::40]), "TA"] = np.nan
    p = write_flux_csv(tmp_path / "gappy.csv", df)  # a 2-day driver gap every 40 days
    with pytest.raises(UserError, match="sequence_length=60 leaves no samples.*38 days"):
        prepare(PrepareConfig(data=str(p), target="NEE", columns=("TA",), sequence_length=60,
                              window_gap_days=0))  # DLFM rule: no gap inside a window


@needs_shared
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_on_us_umb(name):
    ds = prepare(PrepareConfig(data=str(UMB), target="NEE", columns=("TA", "PPFD_IN", "SW_IN"),
                               sequence_length=7))
    split = ds.cv_splits(1)[0]
    res = train_split(get_family(name), first_point(name), split, max_epochs=QUICK[name], seed=0)
    assert math.isfinite(res.r2) and math.isfinite(res.mse) and res.n_train > 2000


def test_every_family_on_the_demo_site(tmp_path):
    p = write_demo_site(tmp_path / "d.csv", years=5, seed=0)
    split = prepare(PrepareConfig(data=str(p), sequence_length=7)).cv_splits(1)[0]
    for name in FAMILIES:
        res = train_split(get_family(name), first_point(name), split, max_epochs=QUICK[name])
        assert math.isfinite(res.r2), name


# --- capability checks, early stopping, reporting steps, cross-validation --------------------


def test_no_validation_windows_and_param_length_mismatch_are_user_errors():
    s = synthetic_split()
    empty = Split(s.name, s.X_train, s.y_train, s.X_val[:0], s.y_val[:0], s.norm, s.val_years,
                  s.train_days, s.val_days[:0])
    for name in ("lstm", "xgboost"):
        with pytest.raises(UserError, match="no validation windows"):
            train_split(get_family(name), first_point(name), empty, max_epochs=1)
    with pytest.raises(UserError, match="sequence_length=30"):
        train_split(get_family("lstm"), {**first_point("lstm"), "sequence_length": 30}, s,
                    max_epochs=1)
    with pytest.raises(UserError, match="context_length"):
        train_split(get_family("xlstm"), {**first_point("xlstm"), "context_length": 3}, s,
                    max_epochs=1)
    with pytest.raises(UserError, match="too few"):  # trees need 2 windows, torch 2 batches
        train_split(get_family("ann"), {**first_point("ann"), "batch_size": 512}, s,
                    max_epochs=1)


def test_patience_stops_a_plateau():
    """lr 0: the first epoch is the best; training stops ``patience`` epochs later."""
    p = {**first_point("ann"), "lr": 0.0}
    res = train_split(get_family("ann"), p, synthetic_split(), max_epochs=100, patience=4)
    assert res.epochs_run == 5 and res.best_epoch == 0
    assert res.history["epoch"] == [0, 1, 2, 3, 4]


def test_restore_best_false_trains_the_whole_budget():
    p = {**first_point("ann"), "lr": 0.0}
    res = train_split(get_family("ann"), p, synthetic_split(), max_epochs=6, patience=1,
                      restore_best=False)
    assert res.epochs_run == 6 and res.best_epoch == 5


def test_eval_every_thins_reports_but_keeps_the_last_epoch():
    steps = []
    train_split(get_family("ann"), first_point("ann"), synthetic_split(), max_epochs=7,
                eval_every=3, report=lambda s, r: steps.append(s))
    assert steps == [2, 5, 6]


def test_identical_weights_for_the_same_seed_and_threads_restored():
    import torch

    before = torch.get_num_threads()
    fam, split = get_family("dynamic_ann"), synthetic_split()
    p = {**first_point("dynamic_ann"), "dropout": 0.2, "optimizer": "adamw"}
    a = train_split(fam, p, split, max_epochs=3, seed=7)
    b = train_split(fam, p, split, max_epochs=3, seed=7)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert torch.get_num_threads() == before


def test_trees_are_reproducible():
    for name in ("xgboost", "random_forest"):
        p = {**first_point(name), "feed": "stats"}
        a = train_split(get_family(name), p, synthetic_split(), max_epochs=30, seed=3)
        b = train_split(get_family(name), p, synthetic_split(), max_epochs=30, seed=3)
        assert a.r2 == b.r2, name


def test_xgboost_reports_per_chunk_of_rounds_and_stays_picklable():
    import pickle

    from dlfm_auto.training._trees import XGB_REPORT_EVERY

    steps = []
    p = {"learning_rate": 0.05, "n_estimators": 250, "feed": "flatten"}
    res = train_split(get_family("xgboost"), p, synthetic_split(),
                      report=lambda s, r: steps.append((s, r)))
    assert [s for s, _ in steps][:2] == [XGB_REPORT_EVERY - 1, 2 * XGB_REPORT_EVERY - 1]
    assert steps[-1][0] == res.epochs_run - 1 and all(math.isfinite(r) for _, r in steps)
    assert res.history["val_r2"][res.best_epoch] == pytest.approx(res.r2, abs=1e-3)
    assert len(res.history["inner_r2"]) == res.epochs_run
    pickle.dumps(res.model)  # the reporter closure is not kept on the estimator

    def prune(step, r2):
        raise optuna.TrialPruned()

    for name in ("xgboost", "random_forest"):
        with pytest.raises(optuna.TrialPruned):
            train_split(get_family(name), {**first_point(name), "n_estimators": 120},
                        synthetic_split(), report=prune)


def test_cross_validate_reports_global_steps():
    from dlfm_auto.training import cross_validate, report_stride

    splits = [synthetic_split(seed=0), synthetic_split(seed=1)]
    calls = []
    cv = cross_validate(get_family("ann"), first_point("ann"), splits, max_epochs=3,
                        report=lambda s, v: calls.append((s, v)))
    assert cv.stride == report_stride(get_family("ann"), 3) == 3
    assert [s for s, _ in calls] == [0, 1, 2, 3, 4, 5]  # fold * stride + epoch
    for fold in (calls[:3], calls[3:]):  # best-so-far within a fold: never decreases
        assert all(b[1] >= a[1] for a, b in zip(fold, fold[1:], strict=False))
    assert cv.mean_r2 == pytest.approx(np.mean([f.r2 for f in cv.folds]))
    assert calls[2][1] == pytest.approx(max(cv.folds[0].history["val_r2"]), abs=1e-4)
    # Family-wide stride: a trial whose own budget is shorter reports at the same steps.
    assert report_stride(get_family("lstm")) == 2200
    rf = cross_validate(get_family("random_forest"), {**first_point("random_forest"),
                        "n_estimators": 5}, splits, report=lambda s, v: calls.append((s, v)))
    assert rf.stride == 1 and [s for s, _ in calls[-2:]] == [0, 1]  # one step per fold

    with pytest.raises(optuna.TrialPruned):
        cross_validate(get_family("ann"), first_point("ann"), splits, max_epochs=3,
                       report=lambda s, v: (_ for _ in ()).throw(optuna.TrialPruned()))


def test_diverging_sgd_keeps_the_best_epoch():
    p = {**first_point("ann"), "lr": 1e6}
    res = train_split(get_family("ann"), p, synthetic_split(), max_epochs=20)
    assert res.epochs_run < 20  # stopped on a non-finite loss
    assert res.best_epoch == 0 or math.isfinite(res.r2)


# --- issue 10 item 1: nothing that shapes a fold's model looks at its validation year -------


def _garbage(split: Split, seed: int = 9) -> Split:
    """The same split with its validation targets replaced by noise."""
    import dataclasses

    rng = np.random.default_rng(seed)
    return dataclasses.replace(split, y_val=(rng.normal(size=len(split.y_val)) * 50
                                             ).astype(np.float32))


def test_garbage_validation_year_does_not_change_the_chosen_epoch():
    fam = get_family("ann")
    p = {**first_point("ann"), "optimizer": "adam", "lr": 0.05}
    a = train_split(fam, p, synthetic_split(), max_epochs=60, patience=5)
    b = train_split(fam, p, _garbage(synthetic_split()), max_epochs=60, patience=5)
    assert a.best_epoch == b.best_epoch and a.epochs_run == b.epochs_run
    assert a.best_epoch < 59  # early stopping did choose (the test can fail)
    assert a.history["inner_r2"] == b.history["inner_r2"]
    assert a.r2 > 0.5 and b.r2 < 0.1  # the scored part is what changed


def test_garbage_validation_year_does_not_change_xgboost_rounds():
    fam = get_family("xgboost")
    p = {"learning_rate": 0.3, "n_estimators": 2000, "feed": "flatten", "max_depth": 3}
    a = train_split(fam, p, synthetic_split(), patience=20)
    b = train_split(fam, p, _garbage(synthetic_split()), patience=20)
    assert a.best_epoch == b.best_epoch and a.epochs_run == b.epochs_run < 2000
    assert a.r2 > 0.5 and b.r2 < 0.1


def test_without_an_inner_part_nothing_is_chosen():
    """No inner validation part: the whole budget is trained (no epoch chosen on val)."""
    res = train_split(get_family("ann"), first_point("ann"), synthetic_split(inner=0),
                      max_epochs=7, patience=1)
    assert res.epochs_run == 7 and res.best_epoch == 6 and "inner_r2" not in res.history


@needs_shared
def test_umb_folds_choose_on_an_inner_training_year():
    ds = prepare(PrepareConfig(data=str(UMB), target="NEE", columns=("TA", "PPFD_IN", "SW_IN"),
                               sequence_length=7))
    for s in ds.cv_splits():
        inner_years = set(s.train_years[s.inner_val].tolist())
        assert len(inner_years) == 1 and s.val_years[0] not in inner_years
        assert not set(ds.eval_years) & inner_years

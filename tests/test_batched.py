"""Batched training (issue 13): every member of a batch is the model it would be alone.

Known answers: a member's weights, R² and chosen epoch equal training it alone with the same
seed; one epoch of the whole-epoch kernel equals torch autograd + torch.optim on nn.LSTM /
nn.RNN; the held-back reports reach a pruner in the one-fold-after-another order.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dlfm_auto.data import Normalizer, Split
from dlfm_auto.models import _batched_cpu as kern
from dlfm_auto.models import get_family
from dlfm_auto.training import FoldResult, cross_validate, train_many, train_split
from dlfm_auto.training._batched import batch_applies, train_members


def _split(n_train: int, n_val: int, seed: int, L: int = 6, f: int = 3,
           inner: int = 0) -> Split:
    """Synthetic windows: y depends on today's and yesterday's drivers (learnable)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_train + n_val, L, f)).astype(np.float32)
    y = 2.0 * X[:, -1, 0] - X[:, -2, 1] + 0.5 * X[:, -1, 2] ** 2 + 0.1 * rng.normal(
        size=n_train + n_val) + 3.0
    days = np.arange(n_train + n_val).astype("datetime64[D]")
    mask = None
    if inner:
        mask = np.zeros(n_train, dtype=bool)
        mask[-inner:] = True
    return Split(name=f"s{seed}", X_train=X[:n_train], y_train=y[:n_train],
                 X_val=X[n_train:], y_val=y[n_train:],
                 norm=Normalizer(np.zeros(f), np.ones(f), tuple("abc"[:f])), val_years=(seed,),
                 train_days=days[:n_train], val_days=days[n_train:], inner_val=mask,
                 train_years=np.zeros(n_train, dtype=int))


# unequal fold sizes (and last batches of different sizes), each with an inner part
SPLITS = [_split(300, 80, 0, inner=60), _split(237, 70, 1, inner=50),
          _split(350, 90, 2, inner=70)]


def _params(**kw: object) -> dict:
    return {"hidden_size": 5, "num_layers": 2, "batch_size": 32, "lr": 0.05,
            "weight_decay": 0.0, "dropout": 0.0, "optimizer": "sgd", "epochs": 12, **kw}


def _same_model(a: FoldResult, b: FoldResult, atol: float = 1e-6) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=atol, msg=k)
    assert a.best_epoch == b.best_epoch
    assert a.epochs_run == b.epochs_run
    assert a.r2 == pytest.approx(b.r2, abs=1e-6)
    assert a.history["inner_r2"] == pytest.approx(b.history["inner_r2"], abs=1e-6)



@pytest.mark.parametrize("family,layers,opt,dropout", [
    ("lstm", 1, "sgd", 0.0), ("lstm", 2, "adam", 0.0), ("lstm", 3, "adamw", 0.2),
    ("lstm", 2, "sgd", 0.1), ("rnn", 1, "sgd", 0.0), ("rnn", 3, "adam", 0.0)])
def test_member_equals_alone(family: str, layers: int, opt: str, dropout: float) -> None:
    fam = get_family(family)
    p = _params(num_layers=layers, optimizer=opt, dropout=dropout,
                lr=0.01 if opt != "sgd" else 0.05, weight_decay=1e-3)
    assert batch_applies(fam, p, "cpu")
    seeds = [7, 8, 9]
    batch = train_members(fam, p, SPLITS, seeds, patience=3)
    for split, seed, res in zip(SPLITS, seeds, batch, strict=True):
        _same_model(res, train_split(fam, p, split, seed=seed, patience=3))
    # members stopped at different epochs (early stopping on their own inner part)
    assert len({r.epochs_run for r in batch}) > 1 or all(r.epochs_run == 12 for r in batch)
    assert all(math.isfinite(r.r2) for r in batch)


def test_members_stop_early_and_leave() -> None:
    """Patience 1 over 40 epochs: members stop at their own epochs; budgets per member."""
    fam = get_family("lstm")
    p = _params(epochs=40, lr=0.2)
    batch = train_members(fam, p, SPLITS, [1, 2, 3], patience=1, epochs=[40, 40, 5])
    assert batch[2].epochs_run <= 5
    assert any(r.epochs_run < 40 for r in batch[:2])
    for split, seed, res, ep in zip(SPLITS, [1, 2, 3], batch, [40, 40, 5], strict=True):
        _same_model(res, train_split(fam, p, split, seed=seed, patience=1, max_epochs=ep))


def test_batched_matches_torch_reference() -> None:
    """The old single path (nn.LSTM/nn.RNN autograd + torch.optim) for a few epochs, on a
    well-conditioned problem (float differences do not grow): same weights and R²."""
    import os

    for family in ("lstm", "rnn"):
        fam = get_family(family)
        p = _params(num_layers=2, optimizer="adam", lr=0.003, epochs=3)
        ours = train_members(fam, p, SPLITS[:2], [0, 1], restore_best=False)
        os.environ["DLFM_AUTO_BATCHED"] = "off"
        try:
            for split, seed, res in zip(SPLITS[:2], [0, 1], ours, strict=True):
                ref = train_split(fam, p, split, seed=seed, restore_best=False)
                for k, v in ref.model.state_dict().items():
                    torch.testing.assert_close(res.model.state_dict()[k], v, rtol=1e-3,
                                               atol=2e-4, msg=f"{family} {k}")
                assert res.r2 == pytest.approx(ref.r2, abs=1e-3)
        finally:
            del os.environ["DLFM_AUTO_BATCHED"]


@pytest.mark.parametrize("cell,opt,T", [(kern.LSTM, "sgd", 5), (kern.LSTM, "adamw", 5),
                                        (kern.RNN, "adam", 5), (kern.LSTM, "adam", 1),
                                        (kern.RNN, "sgd", 1)])
def test_kernel_epoch_equals_autograd(cell: int, opt: str, T: int) -> None:
    """One epoch (3 batches, the last one short) of ``train_epoch`` against nn.LSTM/nn.RNN
    with autograd and torch.optim, for two members with different weights; T = 1 (the
    memory report's L = 1) has no recurrent product at all."""
    F, H, nl, bs, n = 3, 4, 2, 8, 20
    torch.manual_seed(0)
    X = torch.randn(2 * n, T, F)
    y = torch.randn(2 * n)
    mods = []
    for _ in range(2):
        core = (nn.LSTM if cell == kern.LSTM else nn.RNN)(F, H, num_layers=nl,
                                                          batch_first=True)
        mods.append((core, nn.Linear(H, 1)))
    G = 4 * H if cell == kern.LSTM else H
    W0 = np.stack([np.concatenate([c.weight_ih_l0.detach(), c.weight_hh_l0.detach()], 1)
                   for c, _ in mods]).astype(np.float32)
    Wr = np.stack([np.concatenate([c.weight_ih_l1.detach(), c.weight_hh_l1.detach()], 1)
                   for c, _ in mods])[:, None].astype(np.float32)
    bih = np.stack([[c.bias_ih_l0.detach().numpy(), c.bias_ih_l1.detach().numpy()]
                    for c, _ in mods]).astype(np.float32)
    bhh = np.stack([[c.bias_hh_l0.detach().numpy(), c.bias_hh_l1.detach().numpy()]
                    for c, _ in mods]).astype(np.float32)
    hw = np.stack([h.weight.detach().numpy()[0] for _, h in mods]).astype(np.float32)
    hb = np.stack([h.bias.detach().numpy() for _, h in mods]).astype(np.float32)
    ws = [W0, Wr, bih, bhh, hw, hb]
    assert W0.shape[1] == G
    state = tuple(np.zeros_like(w) for w in ws + ws)
    perm = np.concatenate([np.random.default_rng(0).permutation(n),
                           n + np.random.default_rng(1).permutation(n)])
    lr, wd = 0.01, 0.01
    code = {"sgd": kern.SGD, "adam": kern.ADAM, "adamw": kern.ADAMW}[opt]
    loss = np.zeros(2, dtype=np.float32)
    kern.train_epoch(cell, X.numpy(), y.numpy(), perm, np.array([0, n, 2 * n]),
                     np.array([0, 1]), bs, *ws, code, lr, wd, 0.9, 0.999, 1e-8, state,
                     np.zeros(2, dtype=np.int64), np.zeros((1, 1, 0, H, T, bs), np.float32),
                     False, loss)
    for k, (core, head) in enumerate(mods):
        params = list(core.parameters()) + list(head.parameters())
        optim = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam,
                 "adamw": torch.optim.AdamW}[opt](params, lr=lr, weight_decay=wd)
        idx = torch.from_numpy(perm[k * n:(k + 1) * n])
        total = 0.0
        for i in range(0, n, bs):
            xb, yb = X[idx[i:i + bs]], y[idx[i:i + bs]]
            out, _ = core(xb)
            lo = ((head(out[:, -1, :]).squeeze(-1) - yb) ** 2).mean()
            optim.zero_grad()
            lo.backward()
            optim.step()
            total += float(lo.detach()) * len(yb)
        assert float(loss[k]) == pytest.approx(total, rel=1e-4)
        np.testing.assert_allclose(W0[k][:, :F], core.weight_ih_l0.detach(), atol=2e-6)
        np.testing.assert_allclose(Wr[k, 0][:, H:], core.weight_hh_l1.detach(), atol=2e-6)
        np.testing.assert_allclose(bhh[k, 1], core.bias_hh_l1.detach(), atol=2e-6)
        np.testing.assert_allclose(hw[k], head.weight.detach()[0], atol=2e-6)
        np.testing.assert_allclose(hb[k], head.bias.detach(), atol=2e-6)


class _Pruned(Exception):
    pass


def test_reports_in_fold_order_and_pruning_stops_all() -> None:
    """Held-back reports arrive fold after fold, each fold's epochs in order, exactly the
    values of the one-at-a-time path; a report that raises mid-fold stops every member."""
    fam = get_family("lstm")
    p = _params(epochs=6)
    seen: list[tuple[int, int, float]] = []

    def rep(fold: int):  # noqa: ANN202
        return lambda e, v: seen.append((fold, e, v))

    batch = train_members(fam, p, SPLITS, [0, 1, 2], patience=2,
                          reports=[rep(0), rep(1), rep(2)])
    folds = [f for f, _, _ in seen]
    assert folds == sorted(folds) and set(folds) == {0, 1, 2}
    for k, res in enumerate(batch):
        got = [(e, v) for f, e, v in seen if f == k]
        assert [e for e, _ in got] == res.history["epoch"]
        assert [v for _, v in got] == pytest.approx(res.history["val_r2"])
    # alone, fold by fold (what the objective's pruner sees): the same sequence
    alone: list[tuple[int, int, float]] = []
    for k, split in enumerate(SPLITS):
        train_split(fam, p, split, seed=k, patience=2,
                    report=lambda e, v, k=k: alone.append((k, e, v)))
    assert [(f, e) for f, e, _ in alone] == [(f, e) for f, e, _ in seen]
    assert [v for *_, v in alone] == pytest.approx([v for *_, v in seen], abs=1e-6)

    calls: list[tuple[int, int]] = []

    def pruning(fold: int):  # noqa: ANN202
        def report(epoch: int, value: float) -> None:
            calls.append((fold, epoch))
            if fold == 1 and epoch == 2:
                raise _Pruned
        return report

    with pytest.raises(_Pruned):
        train_members(fam, p, SPLITS, [0, 1, 2], patience=100,
                      reports=[pruning(0), pruning(1), pruning(2)])
    assert calls[-1] == (1, 2) and all(f < 2 for f, _ in calls)


def test_cross_validate_and_train_many_batch_equal_one_by_one() -> None:
    fam = get_family("lstm")
    p = _params(epochs=5)
    cv = cross_validate(fam, p, SPLITS, seed=3, patience=2)
    steps: list[int] = []
    cv_rep = cross_validate(fam, p, SPLITS, seed=3, patience=2,
                            report=lambda s, v: steps.append(s), stride=10)
    assert steps == sorted(steps) and steps[0] == 0 and max(steps) >= 20
    many = train_many(fam, p, [SPLITS[0]] * 2, [5, 6], max_epochs=3, restore_best=False)
    for a, b in zip(cv.folds, cv_rep.folds, strict=True):
        _same_model(a, b)
    for seed, res in zip([5, 6], many, strict=True):
        alone = train_split(fam, p, SPLITS[0], seed=seed, max_epochs=3, restore_best=False)
        assert res.epochs_run == 3 and res.best_epoch == 2
        for k, v in alone.model.state_dict().items():
            torch.testing.assert_close(res.model.state_dict()[k], v)


@pytest.mark.parametrize("family,layers,opt,dropout", [
    ("lstm", 2, "sgd", 0.0), ("lstm", 3, "adamw", 0.2), ("rnn", 2, "adam", 0.0)])
def test_torch_engine_equals_numba_engine(family: str, layers: int, opt: str,
                                          dropout: float) -> None:
    """The GPU path (batched matrix products in torch, members in lockstep over batches,
    short last batches padded) run on the CPU: the same members as the numba engine."""
    fam = get_family(family)
    p = _params(num_layers=layers, optimizer=opt, dropout=dropout, epochs=6,
                lr=0.01 if opt != "sgd" else 0.05, weight_decay=1e-3)
    a = train_members(fam, p, SPLITS, [4, 5, 6], patience=2, epochs=[6, 6, 3])
    b = train_members(fam, p, SPLITS, [4, 5, 6], patience=2, epochs=[6, 6, 3], engine="torch")
    for x, y in zip(a, b, strict=True):  # other summation orders: Adam lets a weight whose
        _same_model(x, y, atol=1e-4)  # gradient is ~0 move by ~1e-5
    with pytest.raises(ValueError, match="engine"):
        train_members(fam, p, SPLITS, [4, 5, 6], engine="numba", device="meta")


def test_falls_back_where_batching_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    fam = get_family("lstm")
    assert not batch_applies(fam, _params(hidden_size=65), "cpu")
    assert not batch_applies(get_family("rnn"), _params(dropout=0.2), "cpu")
    assert not batch_applies(get_family("ann"), {"layer_size": 8, "lr": 0.01}, "cpu")
    assert batch_applies(fam, _params(), "cuda")  # the torch engine
    monkeypatch.setenv("DLFM_AUTO_BATCHED_TORCH", "off")
    assert not batch_applies(fam, _params(), "cuda")
    monkeypatch.setenv("DLFM_AUTO_BATCHED", "off")
    assert not batch_applies(fam, _params(), "cpu")
    monkeypatch.delenv("DLFM_AUTO_BATCHED")
    res = train_many(fam, _params(hidden_size=65, epochs=2), SPLITS[:2], [0, 1])
    assert len(res) == 2 and all(r.epochs_run <= 2 for r in res)

"""Torch training, made for small tabular time series.

What makes it faster than the DLFM loop (measured in ``bench/bench_training.py``): tensors are
built and moved to the device once per split; each epoch shuffles the training windows with one
gather along a seeded permutation and then takes contiguous slices as batches (no DataLoader,
no per-sample indexing and collation); the training loss is accumulated from the batch losses
already computed (DLFM ran a separate pass); validation is one forward pass per evaluation
under ``inference_mode`` (DLFM ran two); losses stay on the device until the epoch ends; the
optimiser updates all weights with one multi-tensor ("foreach") kernel per step.

For a small LSTM most of an epoch is the LSTM's own forward/backward (oneDNN kernels), which
no loop can avoid; the gain is largest for the light models (ANN) and small batches.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dlfm_auto.data import Split
from dlfm_auto.training._result import FoldResult, check_split, r2_mse

#: Validation forward passes are chunked above this many windows (bounded memory).
EVAL_CHUNK = 16384


def resolve_device(device: str | None = None) -> torch.device:
    """``cuda`` when available (and not overridden), else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (None: leave as is), then restore the setting.

    One thread by default: a small model trains no faster with two, and two 1-thread trials
    use the two cores fully (DESIGN §4, measured).
    """
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_optimizer(params: dict[str, Any], weights: Any, device: torch.device
                   ) -> torch.optim.Optimizer:
    """SGD (momentum 0, DLFM), Adam or AdamW, each with ``weight_decay``."""
    name = params.get("optimizer", "sgd")
    lr = float(params["lr"])
    wd = float(params.get("weight_decay", 0.0))
    kw: dict[str, Any] = {"lr": lr, "weight_decay": wd, "foreach": True}
    if name == "sgd":
        return torch.optim.SGD(weights, momentum=0.0, **kw)
    if name == "adam":
        return torch.optim.Adam(weights, **kw)
    if name == "adamw":
        return torch.optim.AdamW(weights, **kw)
    raise ValueError(f"unknown optimizer {name!r}; one of sgd, adam, adamw")


def epoch_budget(family: Any, params: dict[str, Any], max_epochs: int | None) -> int:
    """``params["epochs"]`` (or the family's largest budget), capped by ``max_epochs``."""
    epochs = int(params.get("epochs", family.max_epochs))
    if max_epochs:
        epochs = min(epochs, int(max_epochs))
    return max(1, epochs)


def train_torch(
    family: Any,
    params: dict[str, Any],
    split: Split,
    *,
    max_epochs: int | None,
    patience: int,
    seed: int,
    device: str | None,
    report: Callable[[int, float], None] | None,
    eval_every: int,
    restore_best: bool,
    threads: int | None,
) -> FoldResult:
    t0 = time.perf_counter()
    p = family.resolve(params)
    check_split(family, p, split)
    with torch_threads(threads):
        return _train(family, p, split, max_epochs=max_epochs, patience=patience, seed=seed,
                      device=resolve_device(device), report=report,
                      eval_every=max(1, int(eval_every)), restore_best=restore_best, t0=t0)


def _train(family: Any, p: dict[str, Any], split: Split, *, max_epochs: int | None,
           patience: int, seed: int, device: torch.device,
           report: Callable[[int, float], None] | None, eval_every: int, restore_best: bool,
           t0: float) -> FoldResult:
    torch.manual_seed(seed)  # weight init and dropout masks
    np.random.seed(seed % 2**32)
    model = family.build(p, split.n_features, split.sequence_length)
    # Centre the target but keep its units (the Regressor adds the mean back). The DLFM grid's
    # SGD learning rates were tuned on raw NEE: dividing by its std (~5 at US-UMB) would shrink
    # the loss by std² and SGD's steps with it. Measured on US-UMB (LSTM grid-like, 20 epochs,
    # 3 folds, 3 seeds): standardised 0.795, centred 0.849 (DLFM loop 0.842). Adam/AdamW are
    # insensitive to the loss scale, and TPE searches lr on a log scale either way.
    y_mean, y_std = float(np.mean(split.y_train)), 1.0
    model.set_target_scale(y_mean, y_std)
    model.to(device)
    net = model.net

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

    Xtr, Xva = tensor(split.X_train), tensor(split.X_val)
    ytr = tensor((split.y_train - y_mean) / y_std)
    yva = tensor((split.y_val - y_mean) / y_std)
    sst = float(torch.sum((yva - yva.mean()) ** 2))
    opt = make_optimizer(p, net.parameters(), device)
    bs = int(p.get("batch_size", 64))
    epochs = epoch_budget(family, p, max_epochs)
    gen = torch.Generator().manual_seed(seed)  # CPU generator: same batches on every device
    n = len(ytr)
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_r2": []}
    best_r2, best_epoch, best_state, since = -math.inf, -1, None, 0
    epoch = -1
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(n, generator=gen).to(device)
        Xs, ys = Xtr[perm], ytr[perm]  # one gather per epoch; batches are views below
        total = torch.zeros((), device=device)
        for i in range(0, n, bs):
            xb, yb = Xs[i : i + bs], ys[i : i + bs]
            loss = F.mse_loss(net(xb).reshape(-1), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(yb)
        train_loss = float(total) / n  # the epoch's only host sync besides validation
        last = epoch == epochs - 1
        if (epoch + 1) % eval_every and not last and math.isfinite(train_loss):
            continue
        r2 = _val_r2(net, Xva, yva, sst)
        history["epoch"].append(epoch)
        history["train_loss"].append(train_loss)
        history["val_r2"].append(r2)
        if r2 > best_r2 + 1e-7:
            best_r2, best_epoch, since = r2, epoch, 0
            if restore_best:
                best_state = copy.deepcopy(net.state_dict())
        else:
            since += eval_every
        if report is not None:
            report(epoch, r2)  # may raise optuna.TrialPruned: let it propagate
        if not math.isfinite(train_loss):
            break  # diverged: the best epoch so far stands (NaN R² if there was none)
        if restore_best and since >= patience:
            break
    if restore_best and best_state is not None:
        net.load_state_dict(best_state)
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(Xva[i : i + EVAL_CHUNK]) for i in range(0, len(Xva), EVAL_CHUNK)])
    r2, mse = r2_mse(split.y_val, pred.cpu().numpy())
    return FoldResult(
        r2=r2, mse=mse, best_epoch=max(best_epoch, 0) if restore_best else epoch,
        epochs_run=epoch + 1, n_train=n, n_val=len(yva), model=model, history=history,
        seconds=time.perf_counter() - t0,
    )


def _val_r2(net: torch.nn.Module, Xva: torch.Tensor, yva: torch.Tensor, sst: float) -> float:
    """R² of ``net`` on the validation part: one forward pass, no autograd bookkeeping."""
    net.eval()
    with torch.inference_mode():
        sse = sum(float(torch.sum((net(Xva[i : i + EVAL_CHUNK]).reshape(-1)
                                   - yva[i : i + EVAL_CHUNK]) ** 2))
                  for i in range(0, len(Xva), EVAL_CHUNK))
    # R² is invariant to the target's affine scaling: standardised units give the same value.
    return 1.0 - sse / sst if sst > 0 else math.nan


def predict_torch(model: Any, X: np.ndarray, batch: int = 8192) -> np.ndarray:
    """NEE for windows ``X`` (n, L, f), on the model's device, in float64."""
    dev = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(X), batch):
            xb = np.ascontiguousarray(X[i : i + batch], dtype=np.float32)
            out.append(model(torch.from_numpy(xb).to(dev)))
    return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)

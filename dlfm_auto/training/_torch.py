"""Torch training, made for small tabular time series.

What makes it faster than the DLFM loop (measured in ``bench/bench_training.py``):

- tensors are built and moved to the device once per split;
- a non-sequence net's input feed (today / flatten / stats) is applied once per split, not
  once per batch;
- each epoch shuffles with one gather along a seeded permutation, then batches are contiguous
  slices (no DataLoader: no per-sample indexing and collation);
- the training loss is accumulated from the batch losses already computed (DLFM ran a
  separate pass) and stays on the device until the epoch ends;
- validation is one forward pass per evaluation under ``inference_mode`` (DLFM ran two);
- the optimiser update is one or two multi-tensor kernels per step (torch.optim's per-step
  bookkeeping costs more than a small ANN's forward pass).

For a small LSTM most of an epoch is the LSTM's own forward/backward. On the CPU, training
steps go through a numba kernel (``dlfm_auto/models/_lstm_cpu.py``) that does the same maths
~2x faster than torch's oneDNN LSTM at these sizes; together ~3x per fold-epoch against the
DLFM loop for the DLFM LSTM, ~4x for the ANNs. ``lstm``/``rnn`` with hidden size <= 64 do not
come here on the CPU any more: :mod:`dlfm_auto.training._batched` trains them a whole epoch
per numba call (~9x the DLFM loop), alone or as a batch of folds / seeds; this loop is the
fallback (GPUs' single models, other families, ``DLFM_AUTO_BATCHED=off``).
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
from torch import nn
from torch.nn import functional as F

from dlfm_auto.data import Split
from dlfm_auto.models._base import Feed
from dlfm_auto.training._result import FoldResult, check_split, r2_from_sse, r2_mse

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
    use the two cores fully (measured: bench/).
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


class PlainSGD:
    """SGD with momentum 0 (the DLFM optimiser) as two multi-tensor ops per step.

    Same update as ``torch.optim.SGD(momentum=0, weight_decay=wd)``: g += wd * w; w -= lr * g.
    ``torch.optim``'s bookkeeping costs ~0.15 ms a step on this CPU, about a third of a small
    ANN's whole step; this costs ~0.02 ms.
    """

    def __init__(self, weights: Any, lr: float, weight_decay: float) -> None:
        self.params = [w for w in weights if w.requires_grad]
        self.lr, self.wd = float(lr), float(weight_decay)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for w in self.params:
            w.grad = None

    @torch.no_grad()
    def step(self) -> None:
        ws = [w for w in self.params if w.grad is not None]
        gs = [w.grad for w in ws]
        if not ws:
            return
        if self.wd:
            torch._foreach_add_(gs, ws, alpha=self.wd)
        torch._foreach_add_(ws, gs, alpha=-self.lr)


def make_optimizer(params: dict[str, Any], weights: Any) -> Any:
    """SGD (momentum 0, DLFM), Adam or AdamW, each with ``weight_decay``.

    Adam/AdamW use torch's fused single-kernel implementation (CPU and CUDA): the per-tensor
    loop costs ~0.8 ms a step, more than a small model's forward and backward together.
    """
    name = params.get("optimizer", "sgd")
    lr = float(params["lr"])
    wd = float(params.get("weight_decay", 0.0))
    if name == "sgd":
        return PlainSGD(weights, lr, wd)
    if name not in ("adam", "adamw"):
        raise ValueError(f"unknown optimizer {name!r}; one of sgd, adam, adamw")
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    weights = list(weights)
    try:
        return cls(weights, lr=lr, weight_decay=wd, fused=True)
    except (RuntimeError, ValueError):  # a device without the fused kernel
        return cls(weights, lr=lr, weight_decay=wd, foreach=True)


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
    model.to(device)
    net = model.net

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

    # The epoch is chosen on the split's inner validation part (training years only), never on
    # the validation part that is scored; without one (final models, or a fold with a single
    # training year) nothing is chosen and the whole budget is trained.
    inner = split.inner_val if restore_best else None
    if inner is not None and (inner.all() or not inner.any()):
        inner = None
    fit = ~inner if inner is not None else np.ones(len(split.y_train), dtype=bool)
    y_mean, y_std = float(np.mean(split.y_train[fit])), 1.0
    model.set_target_scale(y_mean, y_std)
    Xwin_va = tensor(split.X_val)
    parts = [tensor(split.X_train[fit]), Xwin_va]
    if inner is not None:
        parts.append(tensor(split.X_train[inner]))
    net, Xtr, Xva, *Xin = _prefeed(net, *parts)
    ytr = tensor((split.y_train[fit] - y_mean) / y_std)
    yva = tensor((split.y_val - y_mean) / y_std)
    sst = float(torch.sum((yva - yva.mean()) ** 2))
    if inner is not None:
        yin = tensor((split.y_train[inner] - y_mean) / y_std)
        sst_in = float(torch.sum((yin - yin.mean()) ** 2))
    opt = make_optimizer(p, net.parameters())
    bs = int(p.get("batch_size", 64))
    epochs = epoch_budget(family, p, max_epochs)
    gen = torch.Generator().manual_seed(seed)  # CPU generator: same batches on every device
    n = len(ytr)
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_r2": []}
    if inner is not None:
        history["inner_r2"] = []
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
        if inner is not None:
            choice = _val_r2(net, Xin[0], yin, sst_in)
            history["inner_r2"].append(choice)
            if choice > best_r2 + 1e-7:
                best_r2, best_epoch, since = choice, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                since += eval_every
        if report is not None:
            report(epoch, r2)  # may raise optuna.TrialPruned: let it propagate
        if not math.isfinite(train_loss):
            break  # diverged: the best inner epoch so far stands (NaN R² if there was none)
        if inner is not None and since >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(Xwin_va[i : i + EVAL_CHUNK])
                          for i in range(0, len(Xwin_va), EVAL_CHUNK)])
    r2, mse = r2_mse(split.y_val, pred.cpu().numpy())
    return FoldResult(
        r2=r2, mse=mse, best_epoch=max(best_epoch, 0) if inner is not None else epoch,
        epochs_run=epoch + 1, n_train=n, n_val=len(yva), model=model, history=history,
        seconds=time.perf_counter() - t0, n_inner=0 if inner is None else int(inner.sum()),
    )


def _prefeed(net: torch.nn.Module, *X: torch.Tensor) -> tuple[Any, ...]:
    """Apply a non-sequence net's parameter-free input :class:`Feed` once, not every batch.

    The returned net is the rest of the same ``Sequential`` (shared modules, so training it
    trains the model); the model itself keeps taking windows. For "stats" this saves a mean
    and a variance over the window per batch, and for every feed the per-epoch shuffle gathers
    (n, k) tables instead of (n, L, f) windows.
    """
    if isinstance(net, nn.Sequential) and len(net) > 1 and isinstance(net[0], Feed):
        with torch.no_grad():
            return (net[1:], *(net[0](x).contiguous() for x in X))
    return (net, *X)


def _val_r2(net: torch.nn.Module, Xva: torch.Tensor, yva: torch.Tensor, sst: float) -> float:
    """R² of ``net`` on the validation part: one forward pass, no autograd bookkeeping."""
    net.eval()
    with torch.inference_mode():
        sse = sum(float(torch.sum((net(Xva[i : i + EVAL_CHUNK]).reshape(-1)
                                   - yva[i : i + EVAL_CHUNK]) ** 2))
                  for i in range(0, len(Xva), EVAL_CHUNK))
    # R² is invariant to the target's affine scaling: standardised units give the same value.
    return r2_from_sse(sse, sst)


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

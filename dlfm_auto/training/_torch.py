"""Torch training, made for small tabular time series.

What makes it fast compared with the DLFM loop: tensors are built and moved to the device
once per split; batches are index slices of a seeded permutation (no DataLoader, no workers,
no per-sample collation); the training loss is accumulated from the batch losses already
computed (DLFM ran a separate pass); validation is one forward pass per evaluation under
``inference_mode`` (DLFM ran two more); losses stay on the device (no per-batch sync).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dlfm_auto.data import Split
from dlfm_auto.training._result import FoldResult, check_split, r2_mse


def resolve_device(device: str | None = None) -> torch.device:
    """``cuda`` when available (and not overridden), else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_optimizer(params: dict[str, Any], weights) -> torch.optim.Optimizer:
    name = params.get("optimizer", "sgd")
    lr = float(params["lr"])
    wd = float(params.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(weights, lr=lr, momentum=0.0, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(weights, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(weights, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


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
) -> FoldResult:
    t0 = time.perf_counter()
    p = family.resolve(params)
    bs = int(p.get("batch_size", 64))
    check_split(family, p, split, bs)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    dev = resolve_device(device)
    model = family.build(p, split.n_features, split.sequence_length).to(dev)
    # Centre the target but keep its units: the DLFM learning rates were tuned for raw NEE,
    # and dividing by its std would shrink SGD steps by std² (slower learning, lower skill).
    y_mean, y_std = float(split.y_train.mean()), 1.0
    model.set_target_scale(y_mean, y_std)
    net = model.net
    Xtr = torch.from_numpy(split.X_train).to(dev)
    ytr = torch.from_numpy(((split.y_train - y_mean) / y_std).astype(np.float32)).to(dev)
    Xva = torch.from_numpy(split.X_val).to(dev)
    yva = torch.from_numpy(((split.y_val - y_mean) / y_std).astype(np.float32)).to(dev)
    sst = torch.sum((yva - yva.mean()) ** 2)
    opt = make_optimizer(p, net.parameters())
    epochs = int(p.get("epochs", family.max_epochs))
    if max_epochs:
        epochs = min(epochs, int(max_epochs))
    gen = torch.Generator().manual_seed(seed)
    n = len(ytr)
    history: dict[str, list[float]] = {"train_loss": [], "val_r2": []}
    best_r2, best_epoch, best_state, since = -math.inf, 0, None, 0
    epoch = -1
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(n, generator=gen).to(dev)
        total = torch.zeros((), device=dev)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            loss = F.mse_loss(net(Xtr[idx]).reshape(-1), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        if (epoch + 1) % eval_every and epoch != epochs - 1:
            continue
        net.eval()
        with torch.inference_mode():
            sse = torch.sum((net(Xva).reshape(-1) - yva) ** 2)
        r2 = float(1.0 - sse / sst) if float(sst) > 0 else float("nan")
        history["train_loss"].append(float(total) / n)
        history["val_r2"].append(r2)
        if r2 > best_r2 + 1e-7:
            best_r2, best_epoch, since = r2, epoch, 0
            if restore_best:
                best_state = copy.deepcopy(net.state_dict())
        else:
            since += eval_every
        if report is not None:
            report(epoch, r2)
        if not math.isfinite(float(total)):
            break  # diverged: the best epoch so far stands
        if since >= patience:
            break
    if restore_best and best_state is not None:
        net.load_state_dict(best_state)
    model.eval()
    with torch.inference_mode():
        pred = model(Xva).cpu().numpy()
    r2, mse = r2_mse(split.y_val, pred)
    return FoldResult(
        r2=r2, mse=mse, best_epoch=best_epoch if restore_best else epoch, epochs_run=epoch + 1,
        n_train=n, n_val=len(yva), model=model, history=history,
        seconds=time.perf_counter() - t0,
    )


def predict_torch(model: Any, X: np.ndarray, batch: int = 8192) -> np.ndarray:
    dev = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(X), batch):
            out.append(model(torch.from_numpy(np.ascontiguousarray(X[i : i + batch],
                                                                   dtype=np.float32)).to(dev)))
    return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)

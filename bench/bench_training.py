"""Trainer speed and skill vs the DLFM training loop, side by side in one run.

    python bench/bench_training.py [--epochs 20] [--no-families] [--no-ann]

Configuration (issue #3): LSTM hidden 8, 2 layers, L=30, batch 64, SGD lr 0.01, 3 year folds
on US-UMB (TA, PPFD_IN, SW_IN), 1 torch thread. The reference loop does what the DLFM code
did: a DataLoader over a TensorDataset (batch 64, shuffled), raw NEE targets, and three
evaluation passes per epoch (training loss, validation loss, validation R²). Ours is
``train_split`` with the same settings, trained for the whole budget (``restore_best=False``,
so neither side picks its best epoch). Folds alternate between the two loops so that load from
other processes hits both alike. Prints s/fold-epoch and CV R² for both, and the ratio.

The same comparison for the DLFM FirstANN (one hidden layer of 8, today's drivers, SGD lr 1e-3
weight decay 0.01, the ann grid point) shows the loop overhead alone, since that model costs
almost nothing. Then every family runs one short trial on the first fold (grid point 0, a few
epochs, or a few hundred trees) and prints its cost per fold-epoch or per fit.

Without the real data (../shared/data beside the repo) it falls back to the synthetic demo
site, with a message; the reference figures (0.098 s/fold-epoch, CV R² 0.849) are US-UMB's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import UMB, UMB_COLUMNS
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlfm_auto.data import PrepareConfig, Split, prepare, write_demo_site
from dlfm_auto.models import FAMILIES, get_family
from dlfm_auto.training import train_split

LSTM_PARAMS = {"hidden_size": 8, "num_layers": 2, "batch_size": 64, "lr": 0.01,
               "weight_decay": 0.0, "dropout": 0.0, "optimizer": "sgd"}
ANN_PARAMS = {"layer_size": 8, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.01,
              "optimizer": "sgd", "feed": "today"}


class DLFMLSTM(nn.Module):
    """The DLFM LSTM: nn.LSTM + linear head on the last step."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, 8, num_layers=2, batch_first=True)
        self.fc = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :]).squeeze(-1)


class DLFMANN(nn.Module):
    """The DLFM FirstANN on today's drivers: Linear-ReLU-Linear."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, -1, :]).squeeze(-1)


def dlfm_fold(split: Split, make: Callable[[int], nn.Module], lr: float, weight_decay: float,
              epochs: int, seed: int) -> tuple[float, float]:
    """DLFM-style training; returns (seconds per epoch, final validation R²)."""
    torch.manual_seed(seed)
    model = make(split.n_features)
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.MSELoss()
    y_train = torch.from_numpy(split.y_train.astype(np.float32))
    y_val = torch.from_numpy(split.y_val.astype(np.float32))
    train = DataLoader(TensorDataset(torch.from_numpy(split.X_train), y_train), batch_size=64,
                       shuffle=True)
    val = DataLoader(TensorDataset(torch.from_numpy(split.X_val), y_val), batch_size=64)
    t0 = time.perf_counter()
    r2 = float("nan")
    for _ in range(epochs):
        model.train()
        for xb, yb in train:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            _ = sum(loss_fn(model(xb), yb).item() for xb, yb in train)  # training loss pass
            _ = sum(loss_fn(model(xb), yb).item() for xb, yb in val)  # validation loss pass
            pred = torch.cat([model(xb) for xb, _ in val]).numpy()  # validation R² pass
            obs = split.y_val
            r2 = 1 - float(np.sum((pred - obs) ** 2) / np.sum((obs - obs.mean()) ** 2))
    return (time.perf_counter() - t0) / epochs, r2


def compare(title: str, splits: list[Split], family: str, params: dict,
            make: Callable[[int], nn.Module], epochs: int) -> None:
    """Reference loop and train_split on every fold, alternating; prints the comparison."""
    ref_t, ref_r2, our_t, our_r2 = [], [], [], []
    fam = get_family(family)
    for i, s in enumerate(splits):
        t, r2 = dlfm_fold(s, make, params["lr"], params["weight_decay"], epochs, seed=i)
        ref_t.append(t)
        ref_r2.append(r2)
        t0 = time.perf_counter()
        res = train_split(fam, {**params, "epochs": epochs}, s, seed=i, patience=10**6,
                          restore_best=False, threads=1)
        our_t.append((time.perf_counter() - t0) / epochs)
        our_r2.append(res.r2)
    rt, ot = float(np.mean(ref_t)), float(np.mean(our_t))
    print(f"\n{title}, {epochs} epochs x {len(splits)} folds")
    print(f"  {'':24}{'s/fold-epoch':>14}{'CV R²':>10}   per fold R²")
    print(f"  {'DLFM-style loop':24}{rt:>14.4f}{np.mean(ref_r2):>10.4f}   "
          f"{np.round(ref_r2, 3).tolist()}")
    print(f"  {'dlfm_auto train_split':24}{ot:>14.4f}{np.mean(our_r2):>10.4f}   "
          f"{np.round(our_r2, 3).tolist()}")
    print(f"  speed-up {rt / ot:.2f}x (target >= 3x); CV R² difference "
          f"{np.mean(our_r2) - np.mean(ref_r2):+.4f} (target >= 0)")


def every_family(split: Split) -> None:
    """One short trial per family on one fold: cost per epoch (torch) or per fit (trees)."""
    print(f"\nevery family, grid point 0 on fold {split.name} (L={split.sequence_length}, "
          f"{len(split.y_train)} training windows), short budget:")
    for name, fam in FAMILIES.items():
        params = {k: v[0] for k, v in fam.grid().items()}
        cap = {"torch": 3, "tree": 300}[fam.kind]
        if name == "random_forest":
            cap = 100
        t0 = time.perf_counter()
        res = train_split(fam, params, split, max_epochs=cap, seed=0, patience=10**6)
        dt = time.perf_counter() - t0
        if fam.kind == "torch":
            what = f"{dt / res.epochs_run:8.3f} s/fold-epoch ({res.epochs_run} epochs)"
        else:
            what = f"{dt:8.3f} s/fit        ({cap} {'rounds' if name == 'xgboost' else 'trees'})"
        print(f"  {name:14} {what:38} R² {res.r2:7.3f}")


def load_splits() -> tuple[str, list[Split]]:
    if UMB.exists():
        ds = prepare(PrepareConfig(data=str(UMB), target="NEE", columns=UMB_COLUMNS,
                                   sequence_length=30))
        return "US-UMB", ds.cv_splits(3)
    print(f"note: real data not found at {UMB}; falling back to the synthetic demo site "
          "(figures are not comparable with the US-UMB reference)", file=sys.stderr)
    path = write_demo_site(Path(tempfile.mkdtemp()) / "demo.csv", years=8, seed=0)
    ds = prepare(PrepareConfig(data=str(path), sequence_length=30))
    return "demo site", ds.cv_splits(3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--no-ann", action="store_true", help="skip the FirstANN comparison")
    ap.add_argument("--no-families", action="store_true", help="skip the per-family timings")
    args = ap.parse_args()
    torch.set_num_threads(1)
    site, splits = load_splits()
    print(f"{site}, L=30, folds {[s.name for s in splits]}, training windows "
          f"{[len(s.y_train) for s in splits]}, 1 torch thread")
    compare("LSTM hidden 8 x 2 layers, SGD lr 0.01, batch 64", splits, "lstm", LSTM_PARAMS,
            DLFMLSTM, args.epochs)
    if not args.no_ann:
        compare("FirstANN (ann grid point: 8 units, SGD lr 1e-3, wd 0.01, today's drivers)",
                splits, "ann", ANN_PARAMS, DLFMANN, args.epochs)
    if not args.no_families:
        every_family(splits[0])


if __name__ == "__main__":
    main()

"""Trainer speed and skill vs the DLFM training loop, side by side in one run.

    python bench/bench_training.py [--epochs 20] [--families]

Configuration (issue #3): LSTM hidden 8, 2 layers, L=30, batch 64, SGD lr 0.01, 3 year folds
on US-UMB (TA, PPFD_IN, SW_IN), 1 torch thread. The reference loop does what the DLFM code
did: a DataLoader over a TensorDataset (batch 64, shuffled), and three evaluation passes per
epoch (training loss, validation loss, validation R²). Prints s/fold-epoch and CV R² for both.
With --families, every family runs one short trial on US-UMB and prints its time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import UMB, UMB_COLUMNS, require_data
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlfm_auto.data import PrepareConfig, prepare
from dlfm_auto.models import FAMILIES, get_family
from dlfm_auto.training import train_split

PARAMS = {"hidden_size": 8, "num_layers": 2, "batch_size": 64, "lr": 0.01,
          "weight_decay": 0.0, "dropout": 0.0, "optimizer": "sgd"}


class DLFMLSTM(nn.Module):
    """The DLFM model: nn.LSTM + linear head on the last step."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, 8, num_layers=2, batch_first=True)
        self.fc = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :]).squeeze(-1)


def dlfm_fold(split, epochs: int, seed: int) -> tuple[float, float]:
    """DLFM-style training; returns (seconds per epoch, final validation R²)."""
    torch.manual_seed(seed)
    model = DLFMLSTM(split.n_features)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.MSELoss()
    train = DataLoader(TensorDataset(torch.from_numpy(split.X_train),
                                     torch.from_numpy(split.y_train)), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(torch.from_numpy(split.X_val),
                                   torch.from_numpy(split.y_val)), batch_size=64)
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--families", action="store_true", help="also time every family")
    args = ap.parse_args()
    require_data()
    torch.set_num_threads(1)
    ds = prepare(PrepareConfig(data=str(UMB), target="NEE", columns=UMB_COLUMNS,
                               sequence_length=30))
    splits = ds.cv_splits(3)
    print(f"US-UMB L=30, folds {[s.name for s in splits]}, training windows "
          f"{[len(s.y_train) for s in splits]}, {args.epochs} epochs, 1 thread")
    ref_t, ref_r2, our_t, our_r2 = [], [], [], []
    lstm = get_family("lstm")
    for i, s in enumerate(splits):
        t, r2 = dlfm_fold(s, args.epochs, seed=i)
        ref_t.append(t)
        ref_r2.append(r2)
        t0 = time.perf_counter()
        res = train_split(lstm, {**PARAMS, "epochs": args.epochs}, s, seed=i, patience=10**6,
                          restore_best=False)
        our_t.append((time.perf_counter() - t0) / args.epochs)
        our_r2.append(res.r2)
    rt, ot = float(np.mean(ref_t)), float(np.mean(our_t))
    print(f"{'':24}{'s/fold-epoch':>14}{'CV R²':>10}")
    print(f"{'DLFM-style loop':24}{rt:>14.4f}{np.mean(ref_r2):>10.4f}")
    print(f"{'dlfm_auto train_split':24}{ot:>14.4f}{np.mean(our_r2):>10.4f}")
    print(f"speed-up: {rt / ot:.2f}x (target >= 3x); CV R² difference "
          f"{np.mean(our_r2) - np.mean(ref_r2):+.4f} (target >= 0)")
    if not args.families:
        return
    print("\nevery family, one trial on the first fold (grid point 0; short budget):")
    for name, fam in FAMILIES.items():
        params = {k: v[0] for k, v in fam.grid().items()}
        cap = 3 if fam.kind == "torch" else 300
        t0 = time.perf_counter()
        res = train_split(fam, params, splits[0], max_epochs=cap, seed=0, patience=10**6)
        dt = time.perf_counter() - t0
        unit = "s/epoch" if fam.kind == "torch" else "s/fit"
        per = dt / cap if fam.kind == "torch" else dt
        print(f"  {name:14} {per:8.3f} {unit:8} R² {res.r2:7.3f}  ({cap} "
              f"{'epochs' if fam.kind == 'torch' else 'trees/rounds'})")


if __name__ == "__main__":
    main()

"""``xlstm``: the real xLSTM (``xlstm`` package: mLSTM and/or sLSTM blocks).

Input projection drivers -> embedding, an ``xLSTMBlockStack``, a head on the last day. On CPU
the sLSTM block must use the "vanilla" backend (the default "cuda" backend fails at
construction); mLSTM needs ``context_length`` >= the window (we set it to L); sLSTM needs the
embedding divisible by the number of heads.
"""

from __future__ import annotations

from typing import Any

import optuna
import torch
from torch import nn

from dlfm_auto.models._base import Family, Regressor, suggest_training

LENGTHS = (7, 14, 30, 60)


def _space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "sequence_length": trial.suggest_categorical("sequence_length", list(LENGTHS)),
        "blocks": trial.suggest_categorical("blocks", ["mlstm", "slstm", "both"]),
        "embedding_dim": trial.suggest_categorical("embedding_dim", [8, 16, 32]),
        "num_blocks": trial.suggest_int("num_blocks", 1, 3),
        "num_heads": trial.suggest_categorical("num_heads", [1, 2, 4]),
        **suggest_training(trial, (100, 300, 600)),
    }


class XLSTMNet(nn.Module):
    def __init__(self, n_features: int, seq_len: int, p: dict[str, Any]) -> None:
        super().__init__()
        from xlstm import (
            FeedForwardConfig,
            mLSTMBlockConfig,
            mLSTMLayerConfig,
            sLSTMBlockConfig,
            sLSTMLayerConfig,
            xLSTMBlockStack,
            xLSTMBlockStackConfig,
        )

        emb, heads, n = int(p["embedding_dim"]), int(p["num_heads"]), int(p["num_blocks"])
        mix = p["blocks"]
        if mix == "slstm":
            slstm_at: list[int] | str = "all"
        elif mix == "both":
            slstm_at = list(range(1, n, 2)) or [0]  # alternate, sLSTM second
        else:
            slstm_at = []
        backend = "cuda" if torch.cuda.is_available() else "vanilla"

        def config(backend: str) -> Any:
            return xLSTMBlockStackConfig(
                mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(
                    conv1d_kernel_size=4, qkv_proj_blocksize=4, num_heads=heads,
                    round_proj_up_to_multiple_of=4)),
                slstm_block=sLSTMBlockConfig(
                    slstm=sLSTMLayerConfig(backend=backend, num_heads=heads,
                                           conv1d_kernel_size=4,
                                           bias_init="powerlaw_blockdependent"),
                    feedforward=FeedForwardConfig(proj_factor=1.3, act_fn="gelu")),
                context_length=seq_len, num_blocks=n, embedding_dim=emb, slstm_at=slstm_at,
                dropout=float(p.get("dropout", 0.0)),
            )

        self.proj = nn.Linear(n_features, emb)
        try:
            self.stack = xLSTMBlockStack(config(backend))
        except Exception:
            if backend == "vanilla":
                raise
            self.stack = xLSTMBlockStack(config("vanilla"))  # no CUDA toolchain for the kernel
        self.head = nn.Linear(emb, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stack(self.proj(x))[:, -1, :]).squeeze(-1)


def _build(p: dict[str, Any], n_features: int, seq_len: int) -> Regressor:
    return Regressor(XLSTMNet(n_features, seq_len, p))


def _check(p: dict[str, Any], seq_len: int) -> str | None:
    if int(p["embedding_dim"]) % int(p["num_heads"]):
        return (f"xlstm: embedding_dim {p['embedding_dim']} must be divisible by num_heads "
                f"{p['num_heads']}")
    return None


FAMILY = Family(
    name="xlstm", sequence=True, kind="torch",
    description="xLSTM block stack (mLSTM/sLSTM, xlstm package)",
    space=_space,
    dlfm_grid={"epochs": [300, 600, 1000], "batch_size": [64], "lr": [1e-3, 1e-2],
               "weight_decay": [0, 1e-3]},
    builder=_build, sequence_lengths=LENGTHS,
    defaults={"optimizer": "sgd", "blocks": "both", "embedding_dim": 16, "num_blocks": 2,
              "num_heads": 2, "dropout": 0.0},
    max_epochs=1000, check=_check,
)

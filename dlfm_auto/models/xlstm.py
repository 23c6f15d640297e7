"""``xlstm``: the real xLSTM (``xlstm`` package: mLSTM and/or sLSTM blocks).

Linear projection drivers -> embedding, an ``xLSTMBlockStack``, a linear head on the last day.
Constraints of the package (checked before building, so they surface as clear errors):

- sLSTM: the default "cuda" backend fails at construction on CPU (``KeyError: 'CUDA_LIB'``),
  so CPU uses "vanilla"; with a GPU the "cuda" kernel is tried and vanilla is the fallback.
- mLSTM: ``context_length`` must be >= the window length (we use the window length itself,
  unless ``context_length`` is given); the parallel form costs O(L^2) per head.
- sLSTM: ``embedding_dim`` must be divisible by ``num_heads``.

xLSTM stacks train ~10x slower than nn.LSTM on CPU, so the space and the grid stay small.
"""

from __future__ import annotations

import functools
from typing import Any

import optuna
import torch
from torch import nn

from dlfm_auto.models._base import Family, Regressor, suggest_training

LENGTHS = (7, 14, 30, 60)  # shorter than lstm's: the stack is slow and O(L^2) in mLSTM
BLOCK_MIXES = ("mlstm", "slstm", "both")
CONV_KERNEL = 4


def _space(trial: optuna.Trial) -> dict[str, Any]:
    mix = trial.suggest_categorical("blocks", list(BLOCK_MIXES))
    return {
        "blocks": mix,
        "embedding_dim": trial.suggest_categorical("embedding_dim", [8, 16, 32]),
        # "both" alternates mLSTM and sLSTM, so it needs two blocks at least.
        "num_blocks": trial.suggest_int("num_blocks", 2 if mix == "both" else 1, 3),
        "num_heads": trial.suggest_categorical("num_heads", [1, 2, 4]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        **suggest_training(trial, (100, 300, 600)),
    }


def slstm_positions(mix: str, num_blocks: int) -> list[int]:
    """Block indices that are sLSTM: none, all, or every second one (mLSTM first)."""
    if mix == "slstm":
        return list(range(num_blocks))
    if mix == "both":
        return list(range(1, num_blocks, 2))
    return []


@functools.cache
def _cuda_slstm_works() -> bool:
    """Whether the sLSTM CUDA kernel compiles and constructs here (tried once per process).

    The kernel is JIT-compiled on first use (needs nvcc); without a toolchain construction
    raises, and the pure-torch "vanilla" backend is used instead.
    """
    try:
        from xlstm import xLSTMBlockStack

        xLSTMBlockStack(_stack_config(8, 1, 1, "slstm", 8, "cuda", 0.0)).to("cuda")
        return True
    except Exception:
        return False


def slstm_backend() -> str:
    """"cuda" when a GPU is present and the kernel constructs, else "vanilla" (pure torch)."""
    return "cuda" if torch.cuda.is_available() and _cuda_slstm_works() else "vanilla"


def _stack_config(emb: int, heads: int, n: int, mix: str, context: int, backend: str,
                  dropout: float) -> Any:
    from xlstm import (
        FeedForwardConfig,
        mLSTMBlockConfig,
        mLSTMLayerConfig,
        sLSTMBlockConfig,
        sLSTMLayerConfig,
        xLSTMBlockStackConfig,
    )

    at = slstm_positions(mix, n)
    mlstm = None if len(at) == n else mLSTMBlockConfig(mlstm=mLSTMLayerConfig(
        conv1d_kernel_size=CONV_KERNEL, qkv_proj_blocksize=4, num_heads=heads,
        round_proj_up_to_multiple_of=4))
    slstm = None if not at else sLSTMBlockConfig(
        slstm=sLSTMLayerConfig(backend=backend, num_heads=heads, conv1d_kernel_size=CONV_KERNEL,
                               bias_init="powerlaw_blockdependent"),
        feedforward=FeedForwardConfig(proj_factor=1.3, act_fn="gelu"))
    return xLSTMBlockStackConfig(mlstm_block=mlstm, slstm_block=slstm, context_length=context,
                                 num_blocks=n, embedding_dim=emb, slstm_at=at, dropout=dropout)


class XLSTMNet(nn.Module):
    """drivers -> Linear -> xLSTMBlockStack -> Linear on the last day (standardised NEE)."""

    def __init__(self, n_features: int, seq_len: int, p: dict[str, Any]) -> None:
        super().__init__()
        from xlstm import xLSTMBlockStack

        emb, heads, n = int(p["embedding_dim"]), int(p["num_heads"]), int(p["num_blocks"])
        context = int(p.get("context_length") or seq_len)
        backend = slstm_backend() if slstm_positions(p["blocks"], n) else "vanilla"
        self.proj = nn.Linear(n_features, emb)
        self.stack = xLSTMBlockStack(_stack_config(emb, heads, n, p["blocks"], context, backend,
                                                   float(p.get("dropout", 0.0))))
        self.head = nn.Linear(emb, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stack(self.proj(x))[:, -1, :]).squeeze(-1)


def _build(p: dict[str, Any], n_features: int, seq_len: int) -> Regressor:
    return Regressor(XLSTMNet(n_features, seq_len, p))


def _check(p: dict[str, Any], seq_len: int) -> str | None:
    emb, heads, n = int(p["embedding_dim"]), int(p["num_heads"]), int(p["num_blocks"])
    if p["blocks"] not in BLOCK_MIXES:
        return f"xlstm: unknown block mix {p['blocks']!r}; one of {', '.join(BLOCK_MIXES)}"
    if n < 1:
        return f"xlstm: num_blocks must be >= 1, got {n}"
    if heads < 1 or emb % heads:
        return f"xlstm: embedding_dim {emb} must be divisible by num_heads {heads}"
    inner = -(-2 * emb // 4) * 4  # mLSTM's up-projection (factor 2, rounded up to 4)
    if slstm_positions(p["blocks"], n) != list(range(n)) and inner % heads:
        return f"xlstm: mLSTM inner dim {inner} (2 x embedding_dim) not divisible by {heads} heads"
    context = p.get("context_length")
    if context is not None and int(context) < seq_len:
        return (f"xlstm: windows of {seq_len} days exceed the mLSTM context_length {context}; "
                f"use --sequence-length <= {context} or a larger context_length")
    return None


FAMILY = Family(
    name="xlstm", sequence=True, kind="torch",
    description="xLSTM block stack (mLSTM/sLSTM, xlstm package)",
    space=_space,
    # DLFM grid: only training settings vary; the architecture is the small fixed default.
    dlfm_grid={"epochs": [300, 600, 1000], "batch_size": [64], "lr": [1e-3, 1e-2],
               "weight_decay": [0, 1e-3]},
    builder=_build, sequence_lengths=LENGTHS,
    defaults={"optimizer": "sgd", "blocks": "both", "embedding_dim": 16, "num_blocks": 2,
              "num_heads": 2, "dropout": 0.0},
    max_epochs=1000, check=_check,
)

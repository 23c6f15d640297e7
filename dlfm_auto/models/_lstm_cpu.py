"""A CPU LSTM kernel for the small LSTMs of flux-tower models (hidden sizes ~4-64).

Why: for a DLFM-sized LSTM (hidden 8, 2 layers, 30 days, batch 64) torch's CPU LSTM (oneDNN)
spends most of its ~1.8 ms per training step on per-step dispatch and reorders, not arithmetic
(a step is ~10 MFLOP). Here each layer's forward and backward is one compiled numba call: per
time step one small BLAS matmul (scipy's, single-threaded) on the stacked [x_t; h_t-1] and
vectorised gate loops over a batch-innermost layout, and the weight gradient is one matmul
over all steps. ~0.66 ms a step (2.6x); ~3.3x per fold-epoch with the trainer's other savings
against the DLFM loop (``bench/bench_training.py``).

It computes exactly what ``nn.LSTM`` computes (same gates, same weights, zero initial state,
dropout between layers in training mode), so the module, its state dict, saved artifacts and
inference all stay plain ``nn.LSTM``: :func:`lstm_last_step` is only used where it applies
(CPU, float32, batch-first, unidirectional, no projection) and falls back to ``nn.LSTM``
otherwise. ``DLFM_AUTO_LSTM_KERNEL=off`` turns it off (for comparisons and debugging).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import torch
from torch import nn

try:  # numba is a dependency, but the model must still run (on oneDNN) without it
    import numba
except ImportError:  # pragma: no cover - exercised only on installs without numba
    numba = None

#: Above this hidden size oneDNN's blocked kernels win (the recurrent matmul dominates).
MAX_HIDDEN = 64


def kernel_enabled() -> bool:
    """The kernel is importable and not switched off by ``DLFM_AUTO_LSTM_KERNEL=off``."""
    return numba is not None and os.environ.get("DLFM_AUTO_LSTM_KERNEL", "on").lower() not in (
        "off", "0", "false", "no")


def applies(core: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`lstm_last_step` can stand in for ``core`` on input ``x``."""
    return (type(core) is nn.LSTM and x.device.type == "cpu" and x.dtype == torch.float32
            and x.dim() == 3 and core.batch_first and not core.bidirectional
            and core.proj_size == 0 and core.bias and core.hidden_size <= MAX_HIDDEN
            and kernel_enabled())


@functools.cache
def _single_threaded_blas() -> None:
    """Run scipy's OpenBLAS (the BLAS numba's ``np.dot`` calls) on one thread, once.

    Its matrices here are tiny (4H x (F+H) x B): a second thread never pays, and on a busy
    machine (another trial on the other core) waiting for it costs 2-10x the whole kernel.
    Only scipy's copy is touched; numpy's and torch's thread settings stay as they are.
    """
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba will call)
        from threadpoolctl import ThreadpoolController

        for lib in ThreadpoolController().lib_controllers:
            if "scipy.libs" in str(lib.filepath) or "scipy/.libs" in str(lib.filepath):
                lib.set_num_threads(1)
    except Exception:  # noqa: BLE001 - a thread setting is never worth failing a trial for
        pass


def lstm_last_step(core: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """``core(x)[0][:, -1, :]`` (batch-first x of shape (B, T, F)) with the numba recurrence."""
    _single_threaded_blas()
    p = float(core.dropout) if core.training and core.num_layers > 1 else 0.0
    return _LSTMStack.apply(x, p, *core.parameters())


class _LSTMStack(torch.autograd.Function):
    """Every layer of an LSTM over the whole sequence, as one autograd node.

    Forward and backward are one numba call per layer (per step: one small BLAS matmul on the
    stacked [x_t; h_t-1] plus vectorised gate loops) and nothing else: one node instead of a
    chain of permutes, slices and per-layer nodes, whose bookkeeping cost as much as the
    arithmetic at these sizes. Layout inside is (T, features, B): the batch is the innermost,
    contiguous axis, so every loop runs over 64 contiguous floats whatever the hidden size.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float, *params: torch.Tensor) -> torch.Tensor:
        h = x.detach().permute(1, 2, 0).contiguous().numpy()
        T, _, B = h.shape
        saved = []
        for layer in range(len(params) // 4):
            w_ih, w_hh, b_ih, b_hh = (t.detach() for t in params[4 * layer: 4 * layer + 4])
            mask = None
            if layer and p > 0:  # nn.LSTM's dropout on the outputs of every layer but the last
                mask = torch.empty(h.shape).bernoulli_(1.0 - p).div_(1.0 - p).numpy()
                h = h * mask
            H = w_hh.shape[1]
            w = torch.cat([w_ih, w_hh], 1).numpy()  # (4H, F + H): one matmul per step
            out = np.empty((T, H, B), dtype=np.float32)
            gates = np.empty((T, 4 * H, B), dtype=np.float32)
            cell = np.empty((T, H, B), dtype=np.float32)
            _forward(h, w, (b_ih + b_hh).numpy(), out, gates, cell)
            saved.append((h, w, out, gates, cell, mask))
            h = out
        ctx.saved = saved
        return torch.from_numpy(np.ascontiguousarray(h[-1].T))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved
        T, H, B = saved[-1][2].shape
        dout = np.zeros((T, H, B), dtype=np.float32)
        dout[-1] = grad.detach().numpy().T
        grads: list[torch.Tensor] = []
        for h, w, out, gates, cell, mask in reversed(saved):
            F = h.shape[1]
            dx = np.empty(h.shape, dtype=np.float32)
            dw = np.empty(w.shape, dtype=np.float32)
            db = np.empty(w.shape[0], dtype=np.float32)
            _backward(h, w, out, gates, cell, dout, dx, dw, db)
            dbt = torch.from_numpy(db)  # both biases get it; separate tensors (optimisers and
            # weight decay update gradients in place)
            grads = [torch.from_numpy(dw[:, :F]), torch.from_numpy(dw[:, F:]), dbt,
                     dbt.clone()] + grads
            dout = dx * mask if mask is not None else dx
        ctx.saved = None
        dxt = torch.from_numpy(dout).permute(2, 0, 1) if ctx.needs_input_grad[0] else None
        return (dxt, None, *grads)


def _njit(fn: Any) -> Any:
    # fastmath lets LLVM vectorise the loops below (reassociation, FMA); no inf/NaN tricks
    # are relied on: the tanh approximation clamps its input.
    if numba is None:
        return fn
    return numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")(fn)


# Rational approximation of tanh on [-7.9053, 7.9053] (Eigen's float tanh; max abs error
# 3.3e-7 against float64 tanh, checked in tests). Unlike math.exp/tanh calls it vectorises:
# the gate non-linearities are most of a small LSTM's forward cost. The coefficients are
# literals in the loop because numba does not vectorise loops that index a global tuple.


@_njit
def _tanh(x: np.ndarray, out: np.ndarray) -> None:
    """out = tanh(x) elementwise (float32, 1-d). Pass a separate ``out``: in place, LLVM's
    overlap check sends the loop down its scalar path."""
    for n in range(x.size):
        v = x[n]
        v = v if v < np.float32(7.90531110763549805) else np.float32(7.90531110763549805)
        v = v if v > np.float32(-7.90531110763549805) else np.float32(-7.90531110763549805)
        v2 = v * v
        p = v2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
        p = p * v2 + np.float32(-8.60467152213735e-11)
        p = p * v2 + np.float32(5.12229709037114e-08)
        p = p * v2 + np.float32(1.48572235717979e-05)
        p = p * v2 + np.float32(6.37261928875436e-04)
        p = p * v2 + np.float32(4.89352455891786e-03)
        q = v2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
        q = q * v2 + np.float32(2.26843463243900e-03)
        q = q * v2 + np.float32(4.89352518554385e-03)
        out[n] = v * p / q


@_njit
def _forward(x: np.ndarray, w: np.ndarray, bias: np.ndarray, out: np.ndarray,
             gates: np.ndarray, cell: np.ndarray) -> None:
    """Recurrence. x (T, F, B); w = [w_ih | w_hh] (4H, F + H); bias (4H,). Writes h (T, H, B),
    the activated gates (T, 4H, B: i, f, g, o as in nn.LSTM) and the cell state (T, H, B).

    Loops run over flat (feature x batch) blocks: gate k of unit j for sample b sits at
    k*H*B + j*B + b, so each gate is one contiguous run and every loop vectorises.
    """
    T, F, B = x.shape
    G = w.shape[0]
    H = G // 4
    HB = H * B
    gf, cf, of = gates.reshape(T, G * B), cell.reshape(T, HB), out.reshape(T, HB)
    inp = np.zeros((F + H, B), dtype=np.float32)  # [x_t; h_t-1]
    rec = np.empty((G, B), dtype=np.float32)
    recf = rec.reshape(G * B)
    half = np.float32(0.5)
    for t in range(T):
        inp[:F] = x[t]
        if t > 0:
            inp[F:] = out[t - 1]
        np.dot(w, inp, rec)  # BLAS sgemm (4H x (F+H)) @ ((F+H) x B)
        for j in range(G):
            # sigmoid(v) = 0.5 tanh(v / 2) + 0.5 for the i, f and o gates
            s = half if (j < 2 * H or j >= 3 * H) else np.float32(1.0)
            bj = bias[j]
            r = rec[j]
            for b in range(B):
                r[b] = (r[b] + bj) * s
        z = gf[t]
        _tanh(recf, z)
        for n in range(2 * HB):
            z[n] = half * z[n] + half
        for n in range(3 * HB, 4 * HB):
            z[n] = half * z[n] + half
        c = cf[t]
        if t > 0:
            cp = cf[t - 1]
            for n in range(HB):
                c[n] = z[n] * z[2 * HB + n] + z[HB + n] * cp[n]
        else:
            for n in range(HB):
                c[n] = z[n] * z[2 * HB + n]
        h = of[t]
        _tanh(c, h)
        for n in range(HB):
            h[n] *= z[3 * HB + n]


@_njit
def _backward(x: np.ndarray, w: np.ndarray, out: np.ndarray, gates: np.ndarray,
              cell: np.ndarray, dout: np.ndarray, dx: np.ndarray, dw: np.ndarray,
              db: np.ndarray) -> None:
    """Backpropagation through time. dout (T, H, B) is the loss gradient on every h_t; writes
    dx (T, F, B), dw ([w_ih | w_hh] layout) and db."""
    T, F, B = x.shape
    G = w.shape[0]
    H = G // 4
    HB = H * B
    gf, cf, dof = gates.reshape(T, G * B), cell.reshape(T, HB), dout.reshape(T, HB)
    wt = np.ascontiguousarray(w.T)  # (F + H, 4H)
    d = np.empty((G, B), dtype=np.float32)  # this step's gate pre-activation gradient
    df = d.reshape(G * B)
    dinp = np.empty((F + H, B), dtype=np.float32)  # gradient on [x_t; h_t-1]
    dhf = np.zeros(HB, dtype=np.float32)  # gradient reaching h_t from step t+1
    dc = np.zeros(HB, dtype=np.float32)  # gradient reaching c_t from step t+1
    tc = np.empty(HB, dtype=np.float32)
    dh = np.empty(HB, dtype=np.float32)  # gradient on h_t
    # Every step's gate gradient and input, side by side: the weight gradient is then one
    # (4H x TB) @ (TB x (F+H)) matmul after the loop instead of T small ones.
    D = np.empty((G, T * B), dtype=np.float32)
    X = np.zeros((F + H, T * B), dtype=np.float32)
    zero = np.zeros(HB, dtype=np.float32)
    one = np.float32(1.0)
    db[:] = 0.0
    for t in range(T - 1, -1, -1):
        _tanh(cf[t], tc)
        g, do = gf[t], dof[t]
        cp = cf[t - 1] if t > 0 else zero
        gi, gfo, gg, go = g[:HB], g[HB:2 * HB], g[2 * HB:3 * HB], g[3 * HB:]
        di, dfo, dg, dgo = df[:HB], df[HB:2 * HB], df[2 * HB:3 * HB], df[3 * HB:]
        # One short loop per quantity: with few arrays per loop LLVM's overlap checks stay
        # cheap and every loop vectorises (one fused loop over ten arrays ran scalar).
        for n in range(HB):
            dh[n] = do[n] + dhf[n]
        for n in range(HB):
            dc[n] += dh[n] * go[n] * (one - tc[n] * tc[n])
        for n in range(HB):
            dgo[n] = dh[n] * tc[n] * go[n] * (one - go[n])
        for n in range(HB):
            di[n] = dc[n] * gg[n] * gi[n] * (one - gi[n])
        for n in range(HB):
            dg[n] = dc[n] * gi[n] * (one - gg[n] * gg[n])
        for n in range(HB):
            dfo[n] = dc[n] * cp[n] * gfo[n] * (one - gfo[n])
        for n in range(HB):
            dc[n] *= gfo[n]
        lo = t * B
        for j in range(G):
            acc = np.float32(0.0)
            for b in range(B):
                D[j, lo + b] = d[j, b]
                acc += d[j, b]
            db[j] += acc
        for k in range(F):
            for b in range(B):
                X[k, lo + b] = x[t, k, b]
        if t > 0:
            for k in range(H):
                for b in range(B):
                    X[F + k, lo + b] = out[t - 1, k, b]
        np.dot(wt, d, dinp)  # ((F+H) x 4H) @ (4H x B)
        dx[t] = dinp[:F]
        dhf[:] = dinp[F:].ravel()
    np.dot(D, X.T, dw)

"""A CPU LSTM kernel for the small LSTMs of flux-tower models (hidden sizes ~4-64).

Why: for a DLFM-sized LSTM (hidden 8, 2 layers, 30 days, batch 64) torch's CPU LSTM (oneDNN)
spends most of its ~1.8 ms per training step on per-step dispatch and reorders, not arithmetic
(a step is ~10 MFLOP). Here each layer's forward and backward is one compiled numba call over
a batch-innermost layout: the input projection of all steps, the weight gradients and the
input gradient are one BLAS GEMM each (scipy's, single-threaded), per time step only the
recurrent product and vectorised gate loops remain. ~0.25 ms for the recurrence of a step
(forward + backward, both layers); the batched trainer (``_batched_cpu``) runs these same
kernels for whole epochs.

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
    from numba import types as _nbtypes
    from numba.np.linalg import _BLAS

    # numba's own BLAS entry (scipy's sgemm, the one np.dot calls), reached by symbol name so
    # cached machine code stays valid across processes; unlike np.dot it takes leading
    # dimensions, so strided views (one time step of a (features, T, B) array) need no copy.
    _xxgemm = _BLAS().numba_xxgemm(_nbtypes.float32)
except (ImportError, AttributeError):  # pragma: no cover - installs without numba/scipy
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

    Forward and backward are one numba call per layer (see the layout note above
    :func:`_forward`) and nothing else: one node instead of a chain of permutes, slices and
    per-layer nodes, whose bookkeeping cost as much as the arithmetic at these sizes. Layout
    inside is (features, T, B): the batch is the innermost, contiguous axis, so every loop
    runs over B contiguous floats whatever the hidden size.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float, *params: torch.Tensor) -> torch.Tensor:
        h = x.detach().permute(2, 1, 0).contiguous().numpy()
        _, T, B = h.shape
        saved = []
        for layer in range(len(params) // 4):
            w_ih, w_hh, b_ih, b_hh = (t.detach() for t in params[4 * layer: 4 * layer + 4])
            mask = None
            if layer and p > 0:  # nn.LSTM's dropout on the outputs of every layer but the last
                # drawn over (T, H, B) as before the layout change: the same masks per seed
                mask = np.ascontiguousarray(torch.empty((T, h.shape[0], B)).bernoulli_(
                    1.0 - p).div_(1.0 - p).numpy().transpose(1, 0, 2))
                h = h * mask
            H = w_hh.shape[1]
            w = torch.cat([w_ih, w_hh], 1).numpy()  # (4H, F + H) = [w_ih | w_hh]
            out = np.empty((H, T, B), dtype=np.float32)
            gates = np.empty((4 * H, T, B), dtype=np.float32)
            cell = np.empty((H, T, B), dtype=np.float32)
            tcell = np.empty((H, T, B), dtype=np.float32)
            _forward(h, w, (b_ih + b_hh).numpy(), out, gates, cell, tcell)
            saved.append((h, w, out, gates, cell, tcell, mask))
            h = out
        ctx.saved = saved
        return torch.from_numpy(np.ascontiguousarray(h[:, -1].T))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved
        H, T, B = saved[-1][2].shape
        dout = np.empty((H, T, B), dtype=np.float32)
        dout[:, -1] = grad.detach().numpy().T
        grads: list[torch.Tensor] = []
        top = True
        need_input = ctx.needs_input_grad[0]
        for layer in range(len(saved) - 1, -1, -1):
            h, w, out, gates, cell, tcell, mask = saved[layer]
            F = h.shape[0]
            dx = np.empty(h.shape, dtype=np.float32)
            dw = np.empty(w.shape, dtype=np.float32)
            db = np.empty(w.shape[0], dtype=np.float32)
            dc = np.empty((out.shape[0], B), dtype=np.float32)
            _backward(h, w, out, cell, tcell, gates, dout, top, layer > 0 or need_input, dx,
                      dw, db, dc)
            top = False
            dbt = torch.from_numpy(db)  # both biases get it; separate tensors (optimisers and
            # weight decay update gradients in place)
            grads = [torch.from_numpy(dw[:, :F]), torch.from_numpy(dw[:, F:]), dbt,
                     dbt.clone()] + grads
            dout = dx * mask if mask is not None else dx
        ctx.saved = None
        dxt = torch.from_numpy(dout).permute(2, 1, 0) if need_input else None
        return (dxt, None, *grads)


def _njit(fn: Any) -> Any:
    # fastmath lets LLVM vectorise the loops below (reassociation, FMA); no inf/NaN tricks
    # are relied on: the tanh approximation clamps its input.
    if numba is None:
        return fn
    return numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")(fn)


def _njit_inline(fn: Any) -> Any:
    """A scalar helper inlined into the caller's loop (numba IR inlining), so that the loop
    around it still vectorises."""
    if numba is None:
        return fn
    return numba.njit(inline="always", fastmath=True, error_model="numpy")(fn)


_GEMM_SCALARS = np.array([0.0, 1.0], dtype=np.float32)  # beta = 0 / 1, alpha = 1


@_njit
def _gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, accumulate: bool, ta: bool,
          tb: bool) -> None:
    """c = op(a) @ op(b) (+ c if ``accumulate``) on row-major 2-d float32 views whose rows
    are contiguous (any row stride); op transposes when ``ta``/``tb``."""
    M, N = c.shape
    K = a.shape[0] if ta else a.shape[1]
    # BLAS is column-major: c^T = op(b)^T op(a)^T, each row-major view read as its transpose
    _xxgemm(115, 116 if tb else 110, 116 if ta else 110, N, M, K, _GEMM_SCALARS[1:].ctypes,
            b.ctypes, b.strides[0] // 4, a.ctypes, a.strides[0] // 4,
            _GEMM_SCALARS[1:].ctypes if accumulate else _GEMM_SCALARS.ctypes, c.ctypes,
            c.strides[0] // 4)


# Rational approximation of tanh on [-7.9053, 7.9053] (Eigen's float tanh; max abs error
# 3.3e-7 against float64 tanh, checked in tests). Unlike math.exp/tanh calls it vectorises:
# the gate non-linearities are most of a small LSTM's forward cost. The coefficients are
# literals because numba does not vectorise loops that index a global tuple.


@_njit_inline
def _th(v: float) -> float:
    """tanh of one float32 (inlined into vectorised loops)."""
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
    return v * p / q


@_njit
def _tanh(x: np.ndarray, out: np.ndarray) -> None:
    """out = tanh(x) elementwise (float32, 1-d)."""
    for n in range(x.size):
        out[n] = _th(x[n])


# Layout of the recurrences below: (features, T, B), batch innermost. One time step of a
# layer is then a (features x B) view with row stride T*B, which the GEMM reads in place, and
# the whole sequence is one (features x T*B) matrix: the input projection of every step is one
# GEMM before the recurrence, and the weight gradients and the input gradient are one GEMM
# each after it; per step only the recurrent (G x H) @ (H x B) product and the gate loops
# remain. Every loop runs over one contiguous row of B floats.


@_njit
def _forward(x: np.ndarray, w: np.ndarray, bias: np.ndarray, out: np.ndarray,
             gates: np.ndarray, cell: np.ndarray, tcell: np.ndarray) -> None:
    """LSTM recurrence. x (F, T, B); w = [w_ih | w_hh] (4H, F + H); bias (4H,) = b_ih + b_hh.

    Writes h (H, T, B), the activated gates (4H, T, B: i, f, g, o as in nn.LSTM), the cell
    state c and tanh(c) (H, T, B each; the backward pass reads tanh(c) instead of recomputing
    it).
    """
    F, T, B = x.shape
    G = w.shape[0]
    H = G // 4
    _gemm(w[:, :F], x.reshape(F, T * B), gates.reshape(G, T * B), False, False, False)
    half = np.float32(0.5)
    for t in range(T):
        if t > 0:
            _gemm(w[:, F:], out[:, t - 1], gates[:, t], True, False, False)
        for j in range(G):
            bj = bias[j]
            r = gates[j, t]
            if 2 * H <= j < 3 * H:
                for b in range(B):
                    r[b] = _th(r[b] + bj)
            else:  # sigmoid(v) = 0.5 tanh(v / 2) + 0.5 for the i, f and o gates
                for b in range(B):
                    r[b] = half * _th(half * (r[b] + bj)) + half
        # t = 0 apart: a branch inside the unit loop keeps LLVM from vectorising it
        if t == 0:
            for u in range(H):
                gi, gg, go = gates[u, 0], gates[2 * H + u, 0], gates[3 * H + u, 0]
                c, tc, h = cell[u, 0], tcell[u, 0], out[u, 0]
                for b in range(B):
                    c[b] = gi[b] * gg[b]
                for b in range(B):
                    v = _th(c[b])
                    tc[b] = v
                    h[b] = go[b] * v
        else:
            for u in range(H):
                gi, gf, gg = gates[u, t], gates[H + u, t], gates[2 * H + u, t]
                go, cp = gates[3 * H + u, t], cell[u, t - 1]
                c, tc, h = cell[u, t], tcell[u, t], out[u, t]
                for b in range(B):
                    c[b] = gi[b] * gg[b] + gf[b] * cp[b]
                for b in range(B):
                    v = _th(c[b])
                    tc[b] = v
                    h[b] = go[b] * v


@_njit
def _backward(x: np.ndarray, w: np.ndarray, out: np.ndarray, cell: np.ndarray,
              tcell: np.ndarray, gates: np.ndarray, dout: np.ndarray, top: bool,
              need_dx: bool, dx: np.ndarray, dw: np.ndarray, db: np.ndarray,
              dc: np.ndarray) -> None:
    """Backpropagation through time of :func:`_forward`.

    dout (H, T, B) is the loss gradient on every h_t (``top``: only on h_T; the other steps
    are not read). Writes dw ([w_ih | w_hh] layout), db and, if ``need_dx``, dx (F, T, B).
    Overwrites ``gates`` with the gate pre-activation gradients and ``dout`` with the total
    gradient on each h_t; dc (H, B) is scratch.
    """
    F, T, B = x.shape
    G = w.shape[0]
    H = G // 4
    one = np.float32(1.0)
    dc[:] = 0.0
    for t in range(T - 1, -1, -1):
        if t < T - 1:  # the gradient reaching h_t through step t+1
            _gemm(w[:, F:], gates[:, t + 1], dout[:, t], not top, True, False)
        if t > 0:
            for u in range(H):
                gi, gf, gg = gates[u, t], gates[H + u, t], gates[2 * H + u, t]
                go, cp = gates[3 * H + u, t], cell[u, t - 1]
                dh, tc, dcu = dout[u, t], tcell[u, t], dc[u]
                for b in range(B):
                    i, f, g, o, th, h = gi[b], gf[b], gg[b], go[b], tc[b], dh[b]
                    cg = dcu[b] + h * o * (one - th * th)
                    go[b] = h * th * o * (one - o)
                    gi[b] = cg * g * i * (one - i)
                    gg[b] = cg * i * (one - g * g)
                    gf[b] = cg * cp[b] * f * (one - f)
                    dcu[b] = cg * f
        else:
            for u in range(H):
                gi, gf, gg, go = gates[u, 0], gates[H + u, 0], gates[2 * H + u, 0], gates[
                    3 * H + u, 0]
                dh, tc, dcu = dout[u, 0], tcell[u, 0], dc[u]
                for b in range(B):
                    i, g, o, th, h = gi[b], gg[b], go[b], tc[b], dh[b]
                    cg = dcu[b] + h * o * (one - th * th)
                    go[b] = h * th * o * (one - o)
                    gi[b] = cg * g * i * (one - i)
                    gg[b] = cg * i * (one - g * g)
                for b in range(B):
                    gf[b] = 0.0
    _param_grads(x, w, out, gates, need_dx, dx, dw, db)


@_njit
def _param_grads(x: np.ndarray, w: np.ndarray, out: np.ndarray, D: np.ndarray,
                 need_dx: bool, dx: np.ndarray, dw: np.ndarray, db: np.ndarray) -> None:
    """From the pre-activation gradients D (G, T, B) of every step: dw = D [x; h_prev]^T as
    two GEMMs over all T*B columns (h_prev is ``out`` shifted by one step), db = D's row
    sums, and dx = w_ih^T D (F, T, B) when ``need_dx``."""
    F, T, B = x.shape
    G = D.shape[0]
    H = out.shape[0]
    TB = T * B
    D2 = D.reshape(G, TB)
    _gemm(D2, x.reshape(F, TB), dw[:, :F], False, False, True)
    if T > 1:
        _gemm(D2[:, B:], out.reshape(H, TB)[:, :TB - B], dw[:, F:], False, False, True)
    else:
        dw[:, F:] = 0.0
    for j in range(G):
        acc = np.float32(0.0)
        r = D2[j]
        for n in range(TB):
            acc += r[n]
        db[j] = acc
    if need_dx:
        _gemm(w[:, :F], D2, dx.reshape(F, TB), False, True, False)

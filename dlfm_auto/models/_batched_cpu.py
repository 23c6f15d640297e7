"""Whole-epoch CPU kernels for K small LSTMs / Elman RNNs with stacked weights (issue 13).

Why: with :mod:`dlfm_auto.models._lstm_cpu` one training step of the DLFM LSTM (hidden 8 x 2
layers, 30 days, batch 64) costs ~0.55 ms in the recurrence and about as much again in
everything around it (autograd nodes, the head, the loss, the optimiser, Python). Here one
numba call trains every active member of a batch for a whole epoch: batches are gathered
from each member's own shuffled rows, the recurrence is the same ``_forward``/``_backward``
code the single-model kernel uses, and the head, the MSE loss and the optimiser (SGD with
momentum 0, Adam, AdamW, as torch computes them) are plain loops. Nothing per step goes
back to Python.

Layout of the stacked weights (member k first, nn.LSTM's gate order i, f, g, o):
``W0`` (K, G, F + H) = [weight_ih_l0 | weight_hh_l0]; ``Wr`` (K, max(L - 1, 1), G, 2H) the
same for layers 1..L-1; ``bih``/``bhh`` (K, L, G); ``hw`` (K, H) and ``hb`` (K, 1) the linear
head. G = 4H for the LSTM, H for the RNN (``cell`` 0 = LSTM, 1 = tanh RNN).
"""

from __future__ import annotations

import numpy as np

from dlfm_auto.models._lstm_cpu import _backward, _forward, _njit, _tanh

LSTM, RNN = 0, 1
SGD, ADAM, ADAMW = 0, 1, 2


@_njit
def _rnn_forward(x: np.ndarray, w: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    """Elman recurrence h_t = tanh(W [x_t; h_t-1] + b); x (T, F, B), out (T, H, B)."""
    T, F, B = x.shape
    H = w.shape[0]
    inp = np.zeros((F + H, B), dtype=np.float32)
    rec = np.empty((H, B), dtype=np.float32)
    recf = rec.reshape(H * B)
    of = out.reshape(T, H * B)
    for t in range(T):
        inp[:F] = x[t]
        if t > 0:
            inp[F:] = out[t - 1]
        np.dot(w, inp, rec)
        for j in range(H):
            bj = bias[j]
            r = rec[j]
            for b in range(B):
                r[b] += bj
        _tanh(recf, of[t])


@_njit
def _rnn_backward(x: np.ndarray, w: np.ndarray, out: np.ndarray, dout: np.ndarray,
                  dx: np.ndarray, dw: np.ndarray, db: np.ndarray) -> None:
    """BPTT of :func:`_rnn_forward`; dout (T, H, B) -> dx (T, F, B), dw, db."""
    T, F, B = x.shape
    H = w.shape[0]
    wt = np.ascontiguousarray(w.T)
    d = np.empty((H, B), dtype=np.float32)
    dinp = np.empty((F + H, B), dtype=np.float32)
    dh = np.zeros((H, B), dtype=np.float32)
    D = np.empty((H, T * B), dtype=np.float32)
    X = np.zeros((F + H, T * B), dtype=np.float32)
    db[:] = 0.0
    one = np.float32(1.0)
    for t in range(T - 1, -1, -1):
        for j in range(H):
            acc = np.float32(0.0)
            for b in range(B):
                o = out[t, j, b]
                v = (dout[t, j, b] + dh[j, b]) * (one - o * o)
                d[j, b] = v
                D[j, t * B + b] = v
                acc += v
            db[j] += acc
        for k in range(F):
            for b in range(B):
                X[k, t * B + b] = x[t, k, b]
        if t > 0:
            for k in range(H):
                for b in range(B):
                    X[F + k, t * B + b] = out[t - 1, k, b]
        np.dot(wt, d, dinp)
        dx[t] = dinp[:F]
        dh[:] = dinp[F:]
    np.dot(D, X.T, dw)


@_njit
def _update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, opt: int, lr: float,
            wd: float, b1: float, b2: float, eps: float, step: int) -> None:
    """One optimiser step on flat float32 arrays, as torch.optim computes it.

    SGD (momentum 0): g += wd p; p -= lr g. Adam: g += wd p, then the moments; AdamW: p *=
    1 - lr wd first. Bias corrections in float64 like torch's scalar arithmetic.
    """
    n = p.size
    if opt == SGD:
        lr32, wd32 = np.float32(lr), np.float32(wd)
        for i in range(n):
            gi = g[i]
            if wd != 0.0:
                gi = gi + wd32 * p[i]
            p[i] -= lr32 * gi
        return
    bc1 = 1.0 - b1 ** step
    bc2 = 1.0 - b2 ** step
    step_size = np.float32(lr / bc1)
    bc2s = np.float32(np.sqrt(bc2))
    omb1, b2f, omb2 = np.float32(1.0 - b1), np.float32(b2), np.float32(1.0 - b2)
    eps32 = np.float32(eps)
    decay = np.float32(1.0 - lr * wd)
    wd32 = np.float32(wd)
    for i in range(n):
        gi = g[i]
        if opt == ADAMW:
            if wd != 0.0:
                p[i] *= decay
        elif wd != 0.0:
            gi = gi + wd32 * p[i]
        m[i] += (gi - m[i]) * omb1
        v[i] = v[i] * b2f + omb2 * gi * gi
        p[i] -= step_size * (m[i] / (np.sqrt(v[i]) / bc2s + eps32))


@_njit
def _stack_forward(cell: int, xb: np.ndarray, W0: np.ndarray, Wr: np.ndarray,
                   bias: np.ndarray, masks: np.ndarray, use_mask: bool, ins: np.ndarray,
                   outs: np.ndarray, gates: np.ndarray, cells: np.ndarray) -> None:
    """Every layer of one member on one batch xb (T, F, B). bias (L, G) = b_ih + b_hh.

    ``ins[l]`` (l >= 1) keeps layer l's (dropped-out) input; masks (L-1, T, H, B)."""
    nl = bias.shape[0]
    for layer in range(nl):
        if layer == 0:
            x, w = xb, W0
        else:
            x = ins[layer]
            x[:] = outs[layer - 1]
            if use_mask:
                x *= masks[layer - 1]
            w = Wr[layer - 1]
        if cell == LSTM:
            _forward(x, w, bias[layer], outs[layer], gates[layer], cells[layer])
        else:
            _rnn_forward(x, w, bias[layer], outs[layer])


@_njit
def train_epoch(cell: int, X: np.ndarray, y: np.ndarray, perm: np.ndarray, pofs: np.ndarray,
                active: np.ndarray, bs: int, W0: np.ndarray, Wr: np.ndarray, bih: np.ndarray,
                bhh: np.ndarray, hw: np.ndarray, hb: np.ndarray, opt: int, lr: float,
                wd: float, b1: float, b2: float, eps: float, state: tuple,
                steps: np.ndarray, masks: np.ndarray, use_mask: bool,
                loss_out: np.ndarray) -> None:
    """One epoch for every member in ``active``: mini-batches of ``bs`` rows of X (N, T, F)
    in the order ``perm[pofs[k]:pofs[k+1]]`` (member k's own shuffle), MSE on y, one
    optimiser step per batch. ``state`` = (m, v) arrays shaped like (W0, Wr, bih, bhh, hw,
    hb), ``steps[k]`` the member's Adam step count. masks (K, nbatch, L-1, T, H, bs): the
    dropout masks, drawn outside in the order the single-model path draws them.
    ``loss_out[k]``: sum over batches of loss x batch size (float32, like the single path).
    """
    N, T, F = X.shape
    nl = bih.shape[1]
    G = bih.shape[2]
    H = hw.shape[1]
    mW0, mWr, mbih, mbhh, mhw, mhb, vW0, vWr, vbih, vbhh, vhw, vhb = state
    gW0 = np.empty(W0.shape[1:], dtype=np.float32)
    gWr = np.zeros(Wr.shape[1:], dtype=np.float32)
    gb = np.empty((nl, G), dtype=np.float32)
    gb2 = np.empty((nl, G), dtype=np.float32)
    ghw = np.empty(H, dtype=np.float32)
    ghb = np.empty(1, dtype=np.float32)
    bias = np.empty((nl, G), dtype=np.float32)
    two = np.float32(2.0)
    for a in range(active.size):
        k = active[a]
        idx = perm[pofs[k]:pofs[k + 1]]
        n = idx.size
        total = np.float32(0.0)
        nb = 0
        for i0 in range(0, n, bs):
            B = min(bs, n - i0)
            xb = np.empty((T, F, B), dtype=np.float32)
            yb = np.empty(B, dtype=np.float32)
            for b in range(B):
                r = idx[i0 + b]
                yb[b] = y[r]
                for t in range(T):
                    for f in range(F):
                        xb[t, f, b] = X[r, t, f]
            for layer in range(nl):
                for j in range(G):
                    bias[layer, j] = bih[k, layer, j] + bhh[k, layer, j]
            ins = np.empty((nl, T, H, B), dtype=np.float32)
            outs = np.empty((nl, T, H, B), dtype=np.float32)
            gates = np.empty((nl, T, G, B), dtype=np.float32)
            cells = np.empty((nl, T, H, B), dtype=np.float32)
            mk = masks[k, nb, :, :, :, :B] if use_mask else masks[0, 0, :, :, :, :0]
            mk = np.ascontiguousarray(mk)
            _stack_forward(cell, xb, W0[k], Wr[k], bias, mk, use_mask, ins, outs, gates,
                           cells)
            # head, loss, and the loss gradient on the head and on h_T
            top = outs[nl - 1, T - 1]
            dpred = np.empty(B, dtype=np.float32)
            sse = np.float32(0.0)
            for b in range(B):
                acc = np.float32(0.0)
                for j in range(H):
                    acc += top[j, b] * hw[k, j]
                e = acc + hb[k, 0] - yb[b]
                sse += e * e
                dpred[b] = two * e / np.float32(B)
            total += (sse / np.float32(B)) * np.float32(B)
            ghb[0] = 0.0
            for b in range(B):
                ghb[0] += dpred[b]
            for j in range(H):
                acc = np.float32(0.0)
                for b in range(B):
                    acc += dpred[b] * top[j, b]
                ghw[j] = acc
            dout = np.zeros((T, H, B), dtype=np.float32)
            for j in range(H):
                for b in range(B):
                    dout[T - 1, j, b] = dpred[b] * hw[k, j]
            for layer in range(nl - 1, -1, -1):
                if layer == 0:
                    x, w, gw = xb, W0[k], gW0
                else:
                    x, w, gw = ins[layer], Wr[k, layer - 1], gWr[layer - 1]
                dx = np.empty(x.shape, dtype=np.float32)
                if cell == LSTM:
                    _backward(x, w, outs[layer], gates[layer], cells[layer], dout, dx, gw,
                              gb[layer])
                else:
                    _rnn_backward(x, w, outs[layer], dout, dx, gw, gb[layer])
                if layer > 0:
                    if use_mask:
                        dx *= mk[layer - 1]
                    dout = dx
            gb2[:] = gb
            steps[k] += 1
            s = steps[k]
            _update(W0[k].reshape(-1), gW0.reshape(-1), mW0[k].reshape(-1),
                    vW0[k].reshape(-1), opt, lr, wd, b1, b2, eps, s)
            if nl > 1:
                _update(Wr[k].reshape(-1), gWr.reshape(-1), mWr[k].reshape(-1),
                        vWr[k].reshape(-1), opt, lr, wd, b1, b2, eps, s)
            _update(bih[k].reshape(-1), gb.reshape(-1), mbih[k].reshape(-1),
                    vbih[k].reshape(-1), opt, lr, wd, b1, b2, eps, s)
            _update(bhh[k].reshape(-1), gb2.reshape(-1), mbhh[k].reshape(-1),
                    vbhh[k].reshape(-1), opt, lr, wd, b1, b2, eps, s)
            _update(hw[k], ghw, mhw[k], vhw[k], opt, lr, wd, b1, b2, eps, s)
            _update(hb[k], ghb, mhb[k], vhb[k], opt, lr, wd, b1, b2, eps, s)
            nb += 1
        loss_out[k] = total


@_njit
def predict(cell: int, X: np.ndarray, k: int, W0: np.ndarray, Wr: np.ndarray,
            bih: np.ndarray, bhh: np.ndarray, hw: np.ndarray, hb: np.ndarray,
            out: np.ndarray, chunk: int) -> None:
    """Member k's (scaled) prediction for every window of X (N, T, F), no dropout."""
    N, T, F = X.shape
    nl = bih.shape[1]
    G = bih.shape[2]
    H = hw.shape[1]
    bias = np.empty((nl, G), dtype=np.float32)
    for layer in range(nl):
        for j in range(G):
            bias[layer, j] = bih[k, layer, j] + bhh[k, layer, j]
    nomask = np.empty((0, T, H, 0), dtype=np.float32)
    for i0 in range(0, N, chunk):
        B = min(chunk, N - i0)
        xb = np.empty((T, F, B), dtype=np.float32)
        for b in range(B):
            for t in range(T):
                for f in range(F):
                    xb[t, f, b] = X[i0 + b, t, f]
        ins = np.empty((nl, T, H, B), dtype=np.float32)
        outs = np.empty((nl, T, H, B), dtype=np.float32)
        gates = np.empty((nl, T, G, B), dtype=np.float32)
        cells = np.empty((nl, T, H, B), dtype=np.float32)
        _stack_forward(cell, xb, W0[k], Wr[k], bias, nomask, False, ins, outs, gates, cells)
        top = outs[nl - 1, T - 1]
        for b in range(B):
            acc = np.float32(0.0)
            for j in range(H):
                acc += top[j, b] * hw[k, j]
            out[i0 + b] = acc + hb[k, 0]

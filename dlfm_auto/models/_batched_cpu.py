"""Whole-epoch CPU kernels for K small LSTMs / Elman RNNs with stacked weights (issue 13).

Why: with :mod:`dlfm_auto.models._lstm_cpu` one training step of the DLFM LSTM (hidden 8 x 2
layers, 30 days, batch 64) costs ~0.55 ms in the recurrence and about as much again in
everything around it (autograd nodes, the head, the loss, the optimiser, Python). Here one
numba call trains every active member of a batch for a whole epoch: batches are gathered
from each member's own shuffled rows, the recurrence is the same ``_forward``/``_backward``
code the single-model kernel uses, and the head, the MSE loss and the optimiser (SGD with
momentum 0, Adam, AdamW, as torch computes them) are plain loops. Nothing per step goes
back to Python, and nothing is allocated per batch: every scratch array is made once per
epoch at the largest batch and viewed at the batch's size.

Layout of the stacked weights (member k first, nn.LSTM's gate order i, f, g, o):
``W0`` (K, G, F + H) = [weight_ih_l0 | weight_hh_l0]; ``Wr`` (K, max(L - 1, 1), G, 2H) the
same for layers 1..L-1; ``bih``/``bhh`` (K, L, G); ``hw`` (K, H) and ``hb`` (K, 1) the linear
head. G = 4H for the LSTM, H for the RNN (``cell`` 0 = LSTM, 1 = tanh RNN).

Caching: numba's on-disk cache of these kernels is keyed by this file only, yet it holds the
``_lstm_cpu`` kernels compiled in. Whoever edits ``_lstm_cpu.py`` must touch this file too (or
delete ``__pycache__/*.nbi``/``*.nbc``), or the old compiled code keeps running. A package
install rewrites both files, so users never meet a stale cache.
"""

from __future__ import annotations

import numpy as np

from dlfm_auto.models._lstm_cpu import _backward, _forward, _gemm, _njit, _param_grads, _th

LSTM, RNN = 0, 1
SGD, ADAM, ADAMW = 0, 1, 2


@_njit
def _rnn_forward(x: np.ndarray, w: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    """Elman recurrence h_t = tanh(W [x_t; h_t-1] + b); x (F, T, B), out (H, T, B).

    The input projection of every step is one GEMM straight into ``out``; per step the
    recurrent product is added in place and the bias and tanh applied."""
    F, T, B = x.shape
    H = w.shape[0]
    _gemm(w[:, :F], x.reshape(F, T * B), out.reshape(H, T * B), False, False, False)
    for t in range(T):
        if t > 0:
            _gemm(w[:, F:], out[:, t - 1], out[:, t], True, False, False)
        for j in range(H):
            bj = bias[j]
            r = out[j, t]
            for b in range(B):
                r[b] = _th(r[b] + bj)


@_njit
def _rnn_backward(x: np.ndarray, w: np.ndarray, out: np.ndarray, dout: np.ndarray,
                  top: bool, need_dx: bool, dx: np.ndarray, dw: np.ndarray, db: np.ndarray,
                  D: np.ndarray) -> None:
    """BPTT of :func:`_rnn_forward`, with the conventions of ``_lstm_cpu._backward``
    (``dout`` overwritten, only its last step read when ``top``); D (H, T, B) is scratch."""
    F, T, B = x.shape
    H = w.shape[0]
    one = np.float32(1.0)
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            _gemm(w[:, F:], D[:, t + 1], dout[:, t], not top, True, False)
        for j in range(H):
            d, o, g = D[j, t], out[j, t], dout[j, t]
            for b in range(B):
                d[b] = g[b] * (one - o[b] * o[b])
    _param_grads(x, w, out, D, need_dx, dx, dw, db)


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
def _v3(buf: np.ndarray, a: int, b: int, c: int) -> np.ndarray:
    """The first a*b*c floats of the 1-d scratch ``buf`` as an (a, b, c) array (a view)."""
    return buf[:a * b * c].reshape(a, b, c)


@_njit
def _stack_forward(cell: int, xb: np.ndarray, W0: np.ndarray, Wr: np.ndarray,
                   bias: np.ndarray, mk: np.ndarray, use_mask: bool, ins: np.ndarray,
                   outs: np.ndarray, gates: np.ndarray, cells: np.ndarray,
                   tcells: np.ndarray) -> None:
    """Every layer of one member on one batch xb (F, T, B). bias (L, G) = b_ih + b_hh.

    Scratch rows (one per layer, viewed at the batch's size by :func:`_v3`): ``outs[l]``
    layer l's h (H, T, B); ``ins[l]`` (l >= 1, with dropout) its dropped-out input; gates,
    cells, tcells the LSTM's saved state. mk (L-1, H, T, >= B): the dropout masks."""
    nl = bias.shape[0]
    F, T, B = xb.shape
    H = W0.shape[1] - F
    G = bias.shape[1]
    for layer in range(nl):
        if layer == 0:
            x, w = xb, W0
        else:
            x = _v3(outs[layer - 1], H, T, B)
            if use_mask:
                prev = x
                x = _v3(ins[layer], H, T, B)
                for j in range(H):
                    for t in range(T):
                        xr, pr, mr = x[j, t], prev[j, t], mk[layer - 1, j, t]
                        for b in range(B):
                            xr[b] = pr[b] * mr[b]
            w = Wr[layer - 1]
        out = _v3(outs[layer], H, T, B)
        if cell == LSTM:
            _forward(x, w, bias[layer], out, _v3(gates[layer], G, T, B),
                     _v3(cells[layer], H, T, B), _v3(tcells[layer], H, T, B))
        else:
            _rnn_forward(x, w, bias[layer], out)


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
    hb), ``steps[k]`` the member's Adam step count. masks (K, nbatch, L-1, H, T, bs): the
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
    # scratch for the largest batch, viewed at each batch's size
    S = T * bs
    xbuf = np.empty(F * S, dtype=np.float32)
    ins = np.empty((nl, H * S), dtype=np.float32)
    outs = np.empty((nl, H * S), dtype=np.float32)
    gates = np.empty((nl, G * S), dtype=np.float32)
    cells = np.empty((nl, H * S), dtype=np.float32)
    tcells = np.empty((nl, H * S), dtype=np.float32)
    grads = np.empty((2, H * S), dtype=np.float32)  # dout of a layer / dx of the one above
    dcbuf = np.empty(H * bs, dtype=np.float32)
    yb = np.empty(bs, dtype=np.float32)
    pred = np.empty(bs, dtype=np.float32)
    dpred = np.empty(bs, dtype=np.float32)
    two = np.float32(2.0)
    for a in range(active.size):
        k = active[a]
        idx = perm[pofs[k]:pofs[k + 1]]
        n = idx.size
        total = np.float32(0.0)
        nb = 0
        for layer in range(nl):
            for j in range(G):
                bias[layer, j] = bih[k, layer, j] + bhh[k, layer, j]
        for i0 in range(0, n, bs):
            B = min(bs, n - i0)
            xb = _v3(xbuf, F, T, B)
            for b in range(B):
                r = idx[i0 + b]
                yb[b] = y[r]
                for t in range(T):
                    for f in range(F):
                        xb[f, t, b] = X[r, t, f]
            mk = masks[k, nb] if use_mask else masks[0, 0]
            _stack_forward(cell, xb, W0[k], Wr[k], bias, mk, use_mask, ins, outs, gates,
                           cells, tcells)
            # head, loss, and the loss gradient on the head and on h_T
            top = _v3(outs[nl - 1], H, T, B)
            for b in range(B):
                pred[b] = 0.0
            for j in range(H):
                row, wj = top[j, T - 1], hw[k, j]
                for b in range(B):
                    pred[b] += row[b] * wj
            sse = np.float32(0.0)
            for b in range(B):
                e = pred[b] + hb[k, 0] - yb[b]
                sse += e * e
                dpred[b] = two * e / np.float32(B)
            total += (sse / np.float32(B)) * np.float32(B)
            ghb[0] = 0.0
            for b in range(B):
                ghb[0] += dpred[b]
            for j in range(H):
                row = top[j, T - 1]
                acc = np.float32(0.0)
                for b in range(B):
                    acc += dpred[b] * row[b]
                ghw[j] = acc
            dout = _v3(grads[0], H, T, B)
            for j in range(H):
                row, wj = dout[j, T - 1], hw[k, j]
                for b in range(B):
                    row[b] = dpred[b] * wj
            dc = dcbuf[:H * B].reshape(H, B)
            cur = 0
            for layer in range(nl - 1, -1, -1):
                if layer == 0:
                    x, w, gw = xb, W0[k], gW0
                else:
                    src = ins[layer] if use_mask else outs[layer - 1]
                    x, w, gw = _v3(src, H, T, B), Wr[k, layer - 1], gWr[layer - 1]
                dx = _v3(grads[1 - cur], H, T, B) if layer > 0 else xb  # xb: not written
                out = _v3(outs[layer], H, T, B)
                top_layer = layer == nl - 1
                if cell == LSTM:
                    _backward(x, w, out, _v3(cells[layer], H, T, B),
                              _v3(tcells[layer], H, T, B), _v3(gates[layer], G, T, B), dout,
                              top_layer, layer > 0, dx, gw, gb[layer], dc)
                else:
                    _rnn_backward(x, w, out, dout, top_layer, layer > 0, dx, gw, gb[layer],
                                  _v3(gates[layer], H, T, B))
                if layer > 0:
                    if use_mask:
                        for j in range(H):
                            for t in range(T):
                                dr, mr = dx[j, t], mk[layer - 1, j, t]
                                for b in range(B):
                                    dr[b] *= mr[b]
                    dout = dx
                    cur = 1 - cur
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
            for layer in range(nl):
                for j in range(G):
                    bias[layer, j] = bih[k, layer, j] + bhh[k, layer, j]
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
    S = T * chunk
    xbuf = np.empty(F * S, dtype=np.float32)
    outs = np.empty((nl, H * S), dtype=np.float32)
    gates = np.empty((nl, G * S), dtype=np.float32)
    cells = np.empty((nl, H * S), dtype=np.float32)
    tcells = np.empty((nl, H * S), dtype=np.float32)
    nomask = np.empty((0, H, T, 1), dtype=np.float32)
    for i0 in range(0, N, chunk):
        B = min(chunk, N - i0)
        xb = _v3(xbuf, F, T, B)
        for b in range(B):
            for t in range(T):
                for f in range(F):
                    xb[f, t, b] = X[i0 + b, t, f]
        _stack_forward(cell, xb, W0[k], Wr[k], bias, nomask, False, outs, outs, gates,
                       cells, tcells)
        top = _v3(outs[nl - 1], H, T, B)
        for b in range(B):
            acc = np.float32(0.0)
            for j in range(H):
                acc += top[j, T - 1, b] * hw[k, j]
            out[i0 + b] = acc + hb[k, 0]

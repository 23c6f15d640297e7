"""Batched training: several members (the folds of a trial, the seeds x folds of a report) as
one model with stacked weights (issue 13).

Each member is what :func:`~dlfm_auto.training._torch.train_torch` would train alone with the
same split and seed: the same initial weights (built under the member's seed), its own
shuffled batches (its own generator), its own dropout masks (drawn in the single path's
order from the member's own copy of the global generator), its own optimiser state, its own
inner-year early stopping and epoch budget. A member that stops leaves the batch. On the CPU
one numba call (:func:`dlfm_auto.models._batched_cpu.train_epoch`) trains every active
member for a whole epoch, so nothing per step returns to Python; the members come back as
plain ``nn.LSTM`` / ``nn.RNN`` models, scored exactly as the single path scores them.

Where it does not apply (not an ``lstm``/``rnn`` core, hidden size > 64, a GPU, dropout in an
``rnn``, the kernel switched off) callers fall back to one model at a time, silently:
:func:`batch_applies` decides. ``DLFM_AUTO_BATCHED=off`` turns batching off.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dlfm_auto.data import Split
from dlfm_auto.models import _batched_cpu as kern
from dlfm_auto.models import _lstm_cpu
from dlfm_auto.models._base import LastStep
from dlfm_auto.training._result import FoldResult, check_split, r2_mse
from dlfm_auto.training._torch import EVAL_CHUNK, epoch_budget, resolve_device, torch_threads

Report = Callable[[int, float], None]

#: Windows per forward call when scoring the validation and inner parts.
PREDICT_CHUNK = 128
_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8


def enabled() -> bool:
    """Batching is not switched off by ``DLFM_AUTO_BATCHED=off`` and the kernel is on."""
    return (os.environ.get("DLFM_AUTO_BATCHED", "on").lower() not in ("off", "0", "false", "no")
            and _lstm_cpu.kernel_enabled())


def torch_engine_enabled() -> bool:
    """The pure-torch engine (GPUs) is not switched off by ``DLFM_AUTO_BATCHED_TORCH=off``."""
    return os.environ.get("DLFM_AUTO_BATCHED_TORCH", "on").lower() not in (
        "off", "0", "false", "no")


def batch_applies(family: Any, params: dict[str, Any], device: str | None = None) -> bool:
    """Whether :func:`train_members` can train ``family`` with ``params`` on ``device``."""
    if family.kind != "torch" or family.name not in ("lstm", "rnn") or not enabled():
        return False
    if resolve_device(device).type != "cpu" and not torch_engine_enabled():
        return False
    p = family.resolve(params)
    try:
        hidden, layers = int(p["hidden_size"]), int(p.get("num_layers", 1))
        dropout = float(p.get("dropout", 0.0)) if layers > 1 else 0.0
        if p.get("optimizer", "sgd") not in ("sgd", "adam", "adamw"):
            return False
    except (KeyError, TypeError, ValueError):
        return False
    if not 1 <= hidden <= _lstm_cpu.MAX_HIDDEN or layers < 1:
        return False
    return not (family.name == "rnn" and dropout > 0)


@dataclass
class _Member:
    """One member's data, model, generators and training state."""

    split: Split
    seed: int
    report: Report | None
    epochs: int
    model: Any = None
    dropout_gen: torch.Generator | None = None
    perm_gen: torch.Generator | None = None
    Xtr: np.ndarray | None = None
    ytr: np.ndarray | None = None
    Xva: np.ndarray | None = None
    yva: np.ndarray | None = None
    sst: float = math.nan
    Xin: np.ndarray | None = None
    yin: np.ndarray | None = None
    sst_in: float = math.nan
    inner: np.ndarray | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    best_r2: float = -math.inf
    best_epoch: int = -1
    best_state: tuple[np.ndarray, ...] | None = None
    since: int = 0
    epoch: int = -1
    done: bool = False
    pending: list[tuple[int, float]] = field(default_factory=list)
    t0: float = 0.0
    seconds: float = 0.0


def train_members(
    family: Any,
    params: dict[str, Any],
    splits: Sequence[Split],
    seeds: Sequence[int],
    *,
    max_epochs: int | None = None,
    epochs: Sequence[int | None] | None = None,
    patience: int = 50,
    reports: Sequence[Report | None] | None = None,
    eval_every: int = 1,
    restore_best: bool = True,
    threads: int | None = 1,
    device: str | None = None,
    engine: str | None = None,
) -> list[FoldResult]:
    """Train member i on ``splits[i]`` with seed ``seeds[i]``, all in one batch.

    ``engine``: "numba" (the CPU default: one kernel call per epoch) or "torch" (batched
    matrix products with autograd, one call per time step and layer; the default on a GPU,
    and testable on the CPU).

    Same contract per member as :func:`~dlfm_auto.training.train_split` (``epochs[i]``, when
    given, overrides the member's budget ``max_epochs``). ``reports[i]`` gets member i's
    ``(epoch, val_r2)`` in the order the single path would produce them one member after
    another: member i's values are held back until members 0..i-1 have stopped, so a pruner
    that reads the latest step sees the same sequence; when a report raises (e.g.
    ``optuna.TrialPruned``) every member stops and the exception propagates.
    A member's ``seconds`` is its wall time from set-up to its stop: members of a batch
    overlap, so their sum overstates the batch's time. Requires :func:`batch_applies`.
    """
    if len(splits) != len(seeds):
        raise ValueError("one seed per split")
    p = family.resolve(params)
    for s in splits:
        check_split(family, p, s)
    reports = list(reports) if reports is not None else [None] * len(splits)
    epochs = list(epochs) if epochs is not None else [None] * len(splits)
    dev = resolve_device(device)
    engine = engine or ("numba" if dev.type == "cpu" else "torch")
    if engine not in ("numba", "torch") or (engine == "numba" and dev.type != "cpu"):
        raise ValueError(f"engine {engine!r} on {dev}: numba runs on the CPU, torch anywhere")
    with torch_threads(threads):
        _lstm_cpu._single_threaded_blas()
        cls = _Batch if engine == "numba" else _TorchBatch
        return cls(family, p, splits, seeds, max_epochs=max_epochs, epochs=epochs,
                   patience=patience, reports=reports, eval_every=max(1, int(eval_every)),
                   restore_best=restore_best, device=dev).run()


class _Batch:
    """The stacked weights, the optimiser state and the members of one batch."""

    def __init__(self, family: Any, p: dict[str, Any], splits: Sequence[Split],
                 seeds: Sequence[int], *, max_epochs: int | None,
                 epochs: Sequence[int | None], patience: int,
                 reports: Sequence[Report | None], eval_every: int,
                 restore_best: bool, device: torch.device) -> None:
        self.family, self.p, self.device = family, p, device
        self.patience, self.eval_every, self.restore_best = patience, eval_every, restore_best
        self.members = [
            _Member(split=s, seed=int(seed), report=r,
                    epochs=epoch_budget(family, p, e if e is not None else max_epochs))
            for s, seed, r, e in zip(splits, seeds, reports, epochs, strict=True)]
        for m in self.members:
            self._setup(m)
        cores = [m.model.net.core for m in self.members]
        c0 = cores[0]
        self.cell = kern.LSTM if isinstance(c0, nn.LSTM) else kern.RNN
        self.nl, self.H = int(c0.num_layers), int(c0.hidden_size)
        self.dropout = float(c0.dropout) if self.nl > 1 else 0.0
        self.T, self.F = splits[0].sequence_length, splits[0].n_features
        self._stack(cores)
        # every member's training rows in one array; member k's rows start at offs[k]
        self.X = np.ascontiguousarray(np.concatenate([m.Xtr for m in self.members]))
        self.y = np.ascontiguousarray(np.concatenate([m.ytr for m in self.members]))
        sizes = [len(m.ytr) for m in self.members]
        self.offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.bs = int(p.get("batch_size", 64))
        opt = p.get("optimizer", "sgd")
        self.opt = {"sgd": kern.SGD, "adam": kern.ADAM, "adamw": kern.ADAMW}[opt]
        self.lr, self.wd = float(p["lr"]), float(p.get("weight_decay", 0.0))
        self.steps = np.zeros(len(self.members), dtype=np.int64)
        weights = self._weights()
        self.state = tuple(np.zeros_like(w) for w in weights + weights)
        self.cursor = 0  # first member whose reports are not all delivered
        self._init_engine()

    def _init_engine(self) -> None:
        """Engine-specific set-up (the numba engine works on the numpy arrays as they are)."""

    # -- set-up ---------------------------------------------------------------------------

    def _setup(self, m: _Member) -> None:
        """What ``_torch._train`` does before its first epoch, for one member."""
        m.t0 = time.perf_counter()
        split = m.split
        torch.manual_seed(m.seed)
        np.random.seed(m.seed % 2**32)
        m.model = self.family.build(self.p, split.n_features, split.sequence_length)
        if not isinstance(m.model.net, LastStep):
            raise TypeError("batched training needs a LastStep recurrent model")
        # dropout masks continue the global generator exactly where the single path would
        m.dropout_gen = torch.Generator()
        m.dropout_gen.set_state(torch.get_rng_state())
        inner = split.inner_val if self.restore_best else None
        if inner is not None and (inner.all() or not inner.any()):
            inner = None
        m.inner = inner
        fit = ~inner if inner is not None else np.ones(len(split.y_train), dtype=bool)
        y_mean = float(np.mean(split.y_train[fit]))
        m.model.set_target_scale(y_mean, 1.0)

        def f32(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a, dtype=np.float32)

        m.Xtr, m.ytr = f32(split.X_train[fit]), f32(split.y_train[fit] - y_mean)
        m.Xva, m.yva = f32(split.X_val), f32(split.y_val - y_mean)
        m.sst = _sst(m.yva)
        m.history = {"epoch": [], "train_loss": [], "val_r2": []}
        if inner is not None:
            m.Xin, m.yin = f32(split.X_train[inner]), f32(split.y_train[inner] - y_mean)
            m.sst_in = _sst(m.yin)
            m.history["inner_r2"] = []
        m.perm_gen = torch.Generator().manual_seed(m.seed)

    def _stack(self, cores: list[nn.Module]) -> None:
        K, nl, H = len(cores), self.nl, self.H
        G = 4 * H if self.cell == kern.LSTM else H
        self.W0 = np.empty((K, G, self.F + H), dtype=np.float32)
        self.Wr = np.zeros((K, max(nl - 1, 1), G, 2 * H), dtype=np.float32)
        self.bih = np.empty((K, nl, G), dtype=np.float32)
        self.bhh = np.empty((K, nl, G), dtype=np.float32)
        self.hw = np.empty((K, H), dtype=np.float32)
        self.hb = np.empty((K, 1), dtype=np.float32)
        for k, (core, m) in enumerate(zip(cores, self.members, strict=True)):
            sd = {n: t.detach().numpy() for n, t in core.state_dict().items()}
            for layer in range(nl):
                w = np.concatenate([sd[f"weight_ih_l{layer}"], sd[f"weight_hh_l{layer}"]], 1)
                if layer == 0:
                    self.W0[k] = w
                else:
                    self.Wr[k, layer - 1] = w
                self.bih[k, layer] = sd[f"bias_ih_l{layer}"]
                self.bhh[k, layer] = sd[f"bias_hh_l{layer}"]
            head = m.model.net.head
            self.hw[k] = head.weight.detach().numpy()[0]
            self.hb[k] = head.bias.detach().numpy()

    def _weights(self) -> list[np.ndarray]:
        return [self.W0, self.Wr, self.bih, self.bhh, self.hw, self.hb]

    # -- training -------------------------------------------------------------------------

    def run(self) -> list[FoldResult]:
        epoch = 0
        while True:
            active = [k for k, m in enumerate(self.members) if not m.done]
            if not active:
                break
            self._epoch(epoch, active)
            self._deliver()
            epoch += 1
        self._deliver()
        return [self._finish(m) for m in self.members]

    def _epoch(self, epoch: int, active: list[int]) -> None:
        K = len(self.members)
        perm = np.zeros(len(self.y), dtype=np.int64)
        for k in active:
            m = self.members[k]
            lo, hi = self.offs[k], self.offs[k + 1]
            perm[lo:hi] = torch.randperm(hi - lo, generator=m.perm_gen).numpy() + lo
        masks, use_mask = self._masks(active)
        loss = np.zeros(K, dtype=np.float32)
        kern.train_epoch(self.cell, self.X, self.y, perm, self.offs, np.asarray(active),
                         self.bs, *self._weights(), self.opt, self.lr, self.wd,
                         _ADAM_BETAS[0], _ADAM_BETAS[1], _ADAM_EPS, self.state, self.steps,
                         masks, use_mask, loss)
        for k in active:
            self._after_epoch(k, epoch, float(loss[k]) / len(self.members[k].ytr))

    def _masks(self, active: list[int]) -> tuple[np.ndarray, bool]:
        """Dropout masks for the epoch, drawn as ``_lstm_cpu._LSTMStack`` draws them."""
        T, H, bs, nl = self.T, self.H, self.bs, self.nl
        if self.dropout <= 0 or nl < 2:
            return np.zeros((1, 1, 0, H, T, bs), dtype=np.float32), False
        nb = max(math.ceil(len(m.ytr) / bs) for m in self.members)
        # (K, batch, layer, H, T, bs): the kernels' (features, T, B) layout; each mask is
        # drawn over (T, H, B) like the single path's, then transposed
        masks = np.ones((len(self.members), nb, nl - 1, H, T, bs), dtype=np.float32)
        q = 1.0 - self.dropout
        for k in active:
            m = self.members[k]
            n = len(m.ytr)
            for b, i0 in enumerate(range(0, n, bs)):
                B = min(bs, n - i0)
                for layer in range(nl - 1):
                    masks[k, b, layer, :, :, :B] = torch.empty((T, H, B)).bernoulli_(
                        q, generator=m.dropout_gen).div_(q).numpy().transpose(1, 0, 2)
        return masks, True

    def _predict(self, k: int, X: np.ndarray) -> np.ndarray:
        out = np.empty(len(X), dtype=np.float32)
        kern.predict(self.cell, X, k, *self._weights(), out, PREDICT_CHUNK)
        return out

    def _r2(self, k: int, X: np.ndarray, y: np.ndarray, sst: float) -> float:
        if not len(X):
            return math.nan
        e = self._predict(k, X) - y
        sse = float(np.dot(e, e))
        return 1.0 - sse / sst if sst > 0 else math.nan

    def _after_epoch(self, k: int, epoch: int, train_loss: float) -> None:
        """Evaluation, early stopping and reports of member k, as in ``_torch._train``."""
        m = self.members[k]
        m.epoch = epoch
        last = epoch == m.epochs - 1
        if (epoch + 1) % self.eval_every and not last and math.isfinite(train_loss):
            return
        r2 = self._r2(k, m.Xva, m.yva, m.sst)
        m.history["epoch"].append(epoch)
        m.history["train_loss"].append(train_loss)
        m.history["val_r2"].append(r2)
        if m.inner is not None:
            choice = self._r2(k, m.Xin, m.yin, m.sst_in)
            m.history["inner_r2"].append(choice)
            if choice > m.best_r2 + 1e-7:
                m.best_r2, m.best_epoch, m.since = choice, epoch, 0
                m.best_state = tuple(_copy(w[k]) for w in self._weights())
            else:
                m.since += self.eval_every
        if m.report is not None:
            m.pending.append((epoch, r2))
        if (not math.isfinite(train_loss) or last
                or (m.inner is not None and m.since >= self.patience)):
            self._stop(m)

    def _stop(self, m: _Member) -> None:
        m.done = True
        m.seconds = time.perf_counter() - m.t0

    def _deliver(self) -> None:
        """Pass held-back values on, member by member, in the single path's order."""
        while self.cursor < len(self.members):
            m = self.members[self.cursor]
            while m.pending:
                epoch, r2 = m.pending.pop(0)
                try:
                    m.report(epoch, r2)  # type: ignore[misc]
                except BaseException:
                    for other in self.members:
                        other.done = True
                    raise
            if not m.done:
                return
            self.cursor += 1

    def _finish(self, m: _Member) -> FoldResult:
        """Load member k's chosen weights into its nn module and score it like the single
        path does (the module's own forward on the validation part)."""
        k = self.members.index(m)
        state = m.best_state if m.best_state is not None else tuple(
            w[k] for w in self._weights())
        W0, Wr, bih, bhh, hw, hb = (_numpy(w) for w in state)
        core, head = m.model.net.core, m.model.net.head
        F = self.F
        sd: dict[str, torch.Tensor] = {}
        for layer in range(self.nl):
            w = W0 if layer == 0 else Wr[layer - 1]
            cut = F if layer == 0 else self.H
            sd[f"weight_ih_l{layer}"] = torch.from_numpy(np.ascontiguousarray(w[:, :cut]))
            sd[f"weight_hh_l{layer}"] = torch.from_numpy(np.ascontiguousarray(w[:, cut:]))
            sd[f"bias_ih_l{layer}"] = torch.from_numpy(bih[layer].copy())
            sd[f"bias_hh_l{layer}"] = torch.from_numpy(bhh[layer].copy())
        core.load_state_dict(sd)
        head.load_state_dict({"weight": torch.from_numpy(hw.copy()[None, :]),
                              "bias": torch.from_numpy(hb.copy())})
        model = m.model.to(self.device)
        model.eval()
        Xwin = torch.from_numpy(np.ascontiguousarray(m.split.X_val, dtype=np.float32)).to(
            self.device)
        with torch.inference_mode():
            pred = torch.cat([model(Xwin[i : i + EVAL_CHUNK])
                              for i in range(0, len(Xwin), EVAL_CHUNK)])
        r2, mse = r2_mse(m.split.y_val, pred.cpu().numpy())
        inner = m.inner
        return FoldResult(
            r2=r2, mse=mse, best_epoch=max(m.best_epoch, 0) if inner is not None else m.epoch,
            epochs_run=m.epoch + 1, n_train=len(m.ytr), n_val=len(m.yva), model=model,
            history=m.history, seconds=m.seconds or time.perf_counter() - m.t0,
            n_inner=0 if inner is None else int(inner.sum()))


def _copy(w: Any) -> Any:
    return w.clone() if isinstance(w, torch.Tensor) else w.copy()


def _numpy(w: Any) -> np.ndarray:
    return w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)


def _sst(y: np.ndarray) -> float:
    """Total sum of squares as the single path computes it (float32 torch)."""
    t = torch.from_numpy(y)
    return float(torch.sum((t - t.mean()) ** 2))


class _TorchBatch(_Batch):
    """The same batch with batched matrix products in torch (any device; what a GPU runs).

    cuDNN cannot step different weights together, so each layer is stepped by hand: one
    ``bmm`` for every time step's input projection, then per time step one ``baddbmm`` over
    the members' recurrent weights. Members run in lockstep over batch indices; a member with
    fewer batches sits out the last ones (no update, no optimiser step), and short last
    batches are padded with rows of zero weight, so each member's gradient is that of its
    own batch mean. Optimiser maths as torch.optim's, per member (own Adam step counts).
    """

    def _init_engine(self) -> None:
        dev = self.device

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

        self.W0, self.Wr, self.bih, self.bhh, self.hw, self.hb = (
            t(w) for w in (self.W0, self.Wr, self.bih, self.bhh, self.hw, self.hb))
        self.state = tuple(torch.zeros_like(w) for w in self._weights() * 2)
        self.Xd, self.yd = t(self.X), t(self.y)
        self.tsteps = torch.zeros(len(self.members), dtype=torch.float64, device=dev)

    def _stack_forward(self, sel: torch.Tensor, x: torch.Tensor, ws: list[torch.Tensor],
                       masks: torch.Tensor | None) -> torch.Tensor:
        """Last hidden state (A, B, H) of the members ``sel`` (weights ``ws``) on x (A, B, T, F).

        masks (A, L-1, B, T, H): dropout on the inputs of layers 1..L-1."""
        W0, Wr, bih, bhh = ws[:4]
        A, B, T, _ = x.shape
        H = self.H
        h_seq = x
        for layer in range(self.nl):
            w = W0 if layer == 0 else Wr[:, layer - 1]
            Fl = h_seq.shape[-1]
            if layer and masks is not None:
                h_seq = h_seq * masks[:, layer - 1]
            w_ih, w_hh = w[:, :, :Fl], w[:, :, Fl:]
            b = (bih[:, layer] + bhh[:, layer]).unsqueeze(1)  # (A, 1, G)
            xi = torch.baddbmm(b, h_seq.reshape(A, B * T, Fl), w_ih.transpose(1, 2))
            xi = xi.reshape(A, B, T, -1)
            h = x.new_zeros(A, B, H)
            c = x.new_zeros(A, B, H)
            outs = []
            for step in range(T):
                g = torch.baddbmm(xi[:, :, step], h, w_hh.transpose(1, 2))
                if self.cell == kern.LSTM:
                    i, f, gg, o = g.chunk(4, dim=2)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                    h = torch.sigmoid(o) * torch.tanh(c)
                else:
                    h = torch.tanh(g)
                outs.append(h)
            h_seq = torch.stack(outs, dim=2)  # (A, B, T, H)
        return h_seq[:, :, -1]

    def _epoch(self, epoch: int, active: list[int]) -> None:
        dev, bs, K = self.device, self.bs, len(self.members)
        perms = {}
        for k in active:
            m = self.members[k]
            perms[k] = torch.randperm(len(m.ytr), generator=m.perm_gen) + int(self.offs[k])
        masks_np, use_mask = self._masks(active)
        masks_t = torch.from_numpy(masks_np).to(dev) if use_mask else None
        total = torch.zeros(K, dtype=torch.float32, device=dev)
        nbat = {k: math.ceil(len(self.members[k].ytr) / bs) for k in active}
        for s in range(max(nbat.values())):
            act = [k for k in active if s < nbat[k]]
            rows = torch.zeros(len(act), bs, dtype=torch.int64)
            wgt = torch.zeros(len(act), bs, dtype=torch.float32)
            for a, k in enumerate(act):
                idx = perms[k][s * bs : (s + 1) * bs]
                rows[a, : len(idx)] = idx
                wgt[a, : len(idx)] = 1.0 / len(idx)
            rows, wgt = rows.to(dev), wgt.to(dev)
            valid = (wgt > 0).float()
            sel = torch.tensor(act, device=dev)
            ws = [w.index_select(0, sel).requires_grad_(True) for w in self._weights()]
            xb, yb = self.Xd[rows], self.yd[rows]  # (A, bs, T, F), (A, bs)
            mk = None
            if masks_t is not None:  # (A, nb, L-1, H, T, bs) -> (A, L-1, bs, T, H)
                mk = masks_t[sel, s].permute(0, 1, 4, 3, 2)
            top = self._stack_forward(sel, xb, ws, mk)
            pred = (top * ws[4].unsqueeze(1)).sum(-1) + ws[5]
            err2 = (pred - yb) ** 2 * valid
            loss = (err2 * wgt).sum()
            grads = torch.autograd.grad(loss, ws)
            with torch.no_grad():
                total.index_add_(0, sel, err2.sum(1))
                self._update(sel, [w.detach() for w in ws], list(grads))
        loss_np = total.cpu().numpy()
        for k in active:
            self._after_epoch(k, epoch, float(loss_np[k]) / len(self.members[k].ytr))

    @torch.no_grad()
    def _update(self, sel: torch.Tensor, ws: list[torch.Tensor],
                grads: list[torch.Tensor]) -> None:
        """torch.optim's SGD (momentum 0) / Adam / AdamW per member, written back by row."""
        lr, wd = self.lr, self.wd
        self.tsteps[sel] += 1
        n_w = len(ws)
        for j, (full, p, g) in enumerate(zip(self._weights(), ws, grads, strict=True)):
            if self.opt == kern.SGD:
                if wd:
                    g = g + wd * p
                full[sel] = p - lr * g
                continue
            m_all, v_all = self.state[j], self.state[n_w + j]
            m, v = m_all[sel], v_all[sel]
            if self.opt == kern.ADAMW:
                p = p * (1.0 - lr * wd)
            elif wd:
                g = g + wd * p
            m = m + (g - m) * (1.0 - _ADAM_BETAS[0])
            v = v * _ADAM_BETAS[1] + (1.0 - _ADAM_BETAS[1]) * g * g
            step = self.tsteps[sel]
            shape = (-1,) + (1,) * (p.dim() - 1)
            bc1 = (1.0 - _ADAM_BETAS[0] ** step).reshape(shape)
            bc2s = torch.sqrt(1.0 - _ADAM_BETAS[1] ** step).reshape(shape)
            step_size = (lr / bc1).to(p.dtype)
            p = p - step_size * (m / (v.sqrt() / bc2s.to(p.dtype) + _ADAM_EPS))
            full[sel], m_all[sel], v_all[sel] = p, m, v

    def _predict(self, k: int, X: np.ndarray) -> np.ndarray:
        sel = torch.tensor([k], device=self.device)
        ws = [w.index_select(0, sel) for w in self._weights()]
        out = []
        with torch.no_grad():
            Xt = torch.from_numpy(X).to(self.device)
            for i in range(0, len(Xt), EVAL_CHUNK):
                top = self._stack_forward(sel, Xt[i : i + EVAL_CHUNK].unsqueeze(0), ws, None)
                out.append(((top * ws[4].unsqueeze(1)).sum(-1) + ws[5])[0])
        return torch.cat(out).cpu().numpy()

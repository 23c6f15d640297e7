"""``report variables``: which driver, at which lag, moves predicted NEE.

Neural families: for every sample of the held-out years, the partial derivative of predicted
NEE with respect to each (driver, lag) input (inputs normalised, so units are NEE per standard
deviation of the driver). Drivers are ranked by its mean absolute value, with integrated
gradients (baseline: the training mean, 16 steps; accounts for saturation) beside it. Its
variance over the samples, the DLFM measure, stays as a column but does not rank: a strong
linear driver has a constant gradient, variance 0, and would rank last (``3·x0 + 0.2·x1²``:
0.000 vs 0.155). Tree families: permutation importance (rise
in held-out MSE when one (driver, lag) column is shuffled). Models come from the best trial's
stored artifact when present (no retraining), else one model is trained on the training years.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlfm_auto._errors import UserError
from dlfm_auto._urls import StorageURL
from dlfm_auto.data import prepare
from dlfm_auto.models import get_family
from dlfm_auto.reports import _options
from dlfm_auto.reports._common import (
    REPORTS_DIR,
    html_page,
    html_table,
    md_table,
    report_dir,
    report_folder,
    write_json,
)
from dlfm_auto.reports._load import require_eval_years, study_context
from dlfm_auto.training import predict


def parse_lags(text: str | None, L: int) -> list[int]:
    """``0..30`` or ``0,1,7`` (syntax checked by the options rules); default: the whole window."""
    lags = _options.parse_lags(text)
    if lags is None:
        return list(range(L))
    bad = [g for g in lags if g >= L]
    if bad:
        raise UserError(f"invalid lags={text!r}: {bad} outside the model's window "
                        f"(0..{L - 1} for L={L})")
    return list(lags)


def torch_sensitivity(model: Any, X: np.ndarray, steps: int = 16, ig_samples: int = 256,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """Per (t, feature): variance and mean |d pred/d x| over all samples; mean |integrated
    gradient| over a random subset (``ig_samples``; IG costs ``steps`` backward passes)."""
    import torch

    model.eval()
    device = next(model.parameters()).device

    def grads(x_np: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(x_np), 512):
            x = torch.tensor(x_np[i : i + 512], dtype=torch.float32, device=device,
                             requires_grad=True)
            (g,) = torch.autograd.grad(model(x).sum(), x)
            out.append(g.detach().cpu().numpy())
        return np.concatenate(out)

    g = grads(X)
    rng = np.random.default_rng(seed)
    sub = X[rng.permutation(len(X))[:ig_samples]]
    ig = np.zeros_like(sub, dtype=np.float64)
    for k in range(1, steps + 1):  # baseline 0 = the training mean (inputs are normalised)
        ig += grads(sub * (k / steps))
    ig = sub * ig / steps
    return {"grad_var": g.var(axis=0), "grad_mean_abs": np.abs(g).mean(axis=0),
            "ig_mean_abs": np.abs(ig).mean(axis=0)}


def permutation_importance(family: Any, model: Any, X: np.ndarray, y: np.ndarray,
                           lags: list[int], seed: int = 0, repeats: int = 3
                           ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = float(np.mean((predict(family, model, X) - y) ** 2))
    L, f = X.shape[1], X.shape[2]
    imp = np.zeros((L, f))
    for t in (L - 1 - g for g in lags):
        for j in range(f):
            rises = []
            for _ in range(repeats):
                Xp = X.copy()
                Xp[:, t, j] = Xp[rng.permutation(len(Xp)), t, j]
                rises.append(float(np.mean((predict(family, model, Xp) - y) ** 2)) - base)
            imp[t, j] = np.mean(rises)
    return {"perm_mse_rise": imp}


def ranking_measure(measures: dict[str, Any]) -> str:
    """What ranks the (driver, lag) inputs: mean |∂ŷ/∂x| (torch), else permutation importance.

    Never the gradient variance (DLFM's column): it ranks a strong linear driver last.
    """
    return "grad_mean_abs" if "grad_mean_abs" in measures else "perm_mse_rise"


def _models(ctx, fam, artifacts_dir: str) -> list[tuple[Any, Any]]:
    """(model, normalizer) pairs: the artifact's fold models, else one trained model."""
    from dlfm_auto.data import Normalizer
    from dlfm_auto.study._artifacts import load_best_models

    payload = None
    try:
        payload = load_best_models(ctx.study, artifacts_dir)
    except Exception:
        payload = None
    if payload and payload.get("trial") == ctx.best.number:
        out = []
        for fold in payload["folds"]:
            if fold["kind"] == "torch":
                model = fam.build(payload["params"], len(payload["feature_names"]),
                                  payload["sequence_length"])
                model.load_state_dict(fold["state_dict"])
            else:
                model = fold["model"]
            out.append((model, Normalizer.from_dict(fold["norm"])))
        return out
    from dlfm_auto.reports._final import train_final_models

    split, results = train_final_models(ctx, 1)
    return [(results[0].model, split.norm)]


def variables_report(storage_url: str, study_name: str, *, lags: str | None = None,
                     out_root: Path = REPORTS_DIR, data: str | None = None,
                     artifacts_dir: str | None = None) -> Path:
    _options.parse_lags(lags)  # the syntax, before anything is loaded
    dest = report_dir(out_root, study_name, "variables")  # safe and writable, before the work
    ctx = require_eval_years(study_context(storage_url, study_name, data))
    lag_list = parse_lags(lags, ctx.sequence_length)
    fam = get_family(ctx.spec.family)
    ds = prepare(ctx.prep)  # the best trial's days (matched like its CV)
    L = ds.sequence_length
    if not len(ds.eval_years):
        raise UserError(f"study {study_name!r}: the data have no held-out years to score")
    ev = ds.heldout
    X_raw, y = ds.X[ev], ds.y[ev]
    measures: dict[str, list[np.ndarray]] = {}
    arts = artifacts_dir or StorageURL.parse(storage_url).artifacts_dir
    for model, norm in _models(ctx, fam, arts):
        Xn = norm.apply(X_raw)
        if getattr(fam, "kind", "torch") == "torch":
            m = torch_sensitivity(model, Xn)
        else:
            m = permutation_importance(fam, model, Xn, y, lag_list)
        for k, v in m.items():
            measures.setdefault(k, []).append(v)
    mean = {k: np.mean(v, axis=0) for k, v in measures.items()}  # (L, f) each
    names = list(ds.feature_names)
    rows = []
    for g in lag_list:
        t = L - 1 - g
        for j, name in enumerate(names):
            rows.append({"driver": name, "lag": g,
                         **{k: float(v[t, j]) for k, v in mean.items()}})
    key = ranking_measure(mean)
    ranked = sorted(rows, key=lambda r: (-r[key], -r.get("ig_mean_abs", 0.0)))
    metrics = {"study": study_name, "family": ctx.spec.family, "sequence_length": L,
               "drivers": names, "lags": lag_list, "measure": key,
               "n_samples": int(len(y)), "eval_years": list(ds.eval_years), "rows": rows}
    _write(dest, study_name, ctx, names, lag_list, mean, key, ranked, metrics, L)
    return dest


def _write(dest, study_name, ctx, names, lags, mean, key, ranked, metrics, L) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    heat = np.array([[mean[key][L - 1 - g, j] for g in lags] for j in range(len(names))])
    fig = go.Figure(go.Heatmap(z=heat, x=lags, y=names, colorscale="Viridis",
                               colorbar={"title": key}))
    fig.update_layout(title=f"Sensitivity by driver and lag ({key})", xaxis_title="lag (days)")
    pfig, ax = plt.subplots(figsize=(max(6, len(lags) * 0.25 + 3), 1 + 0.5 * len(names)))
    im = ax.imshow(heat, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(names)), names)
    step = max(1, len(lags) // 15)
    ax.set_xticks(range(0, len(lags), step), [lags[i] for i in range(0, len(lags), step)])
    ax.set_xlabel("lag (days)")
    pfig.colorbar(im, ax=ax, label=key)
    pfig.tight_layout()
    cols = ["driver", "lag", *[k for k in mean]]
    text = (f"{ctx.spec.family} (best trial #{ctx.best.number}, L={L}); measure: {key}; "
            f"{metrics['n_samples']} held-out samples.")
    with report_folder(dest) as tmp:
        write_json(tmp / "metrics.json", metrics)
        pfig.savefig(tmp / "heatmap.png", dpi=110)
        (tmp / "report.md").write_text("\n".join([
            f"# Variable report: {study_name}", "", text, "", "## Ranked (top 30)", "",
            md_table(ranked[:30], cols, "{:.4g}"), "", "![heatmap](heatmap.png)", ""]))
        (tmp / "index.html").write_text(html_page(
            f"Variable report: {study_name}",
            [("Summary", f"<p>{text}</p>"), ("Ranked", html_table(ranked[:30], cols, "{:.4g}"))],
            [fig]))
    plt.close(pfig)

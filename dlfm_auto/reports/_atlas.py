"""The memory atlas: ``report memory`` on a multi-site study, one curve per site.

Every unit (L, seed) of a multi-site memory study records, per site, the sums of its
validation days per season year (``study._memory_units.site_year_sums``): over the CV folds
(with ``cv="sites"`` a site's days are its own fold, scored when the whole site was held out)
and over the site's held-out years. A site's R² at L is the R² of all its days pooled, the
same quantity as a trial's ``site_r2`` (``training.group_scores``), averaged over seeds.

Its 95% interval is the bootstrap of today's pooled curve applied to one site: each replicate
draws the site's season years with replacement and, for each drawn year, one seed's model,
and pools the drawn years' sums into one R². Years stay the sampling unit in both CV modes:
with ``cv="sites"`` the folds are sites, so a per-site resampling of folds would have one
element; the site's years inside its fold are what can be resampled. The pooled curve beside
the sites is the existing one (mean over folds, bootstrap over folds x seeds).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlfm_auto.study._memory_units import SUM_KEYS
from dlfm_auto.training._result import r2_from_sse

#: Parts of a unit scored per site: attribute prefix and what the part is.
PARTS = (("cv", "CV folds (training years)"), ("eval", "held-out years (never choose)"))


def site_label(ds: Any) -> str:
    """A multi-site dataset's name in memory study names: the sites while short."""
    joined = "+".join(ds.site_names)
    return joined if len(joined) <= 40 else f"{len(ds.site_names)}sites"


def _pooled(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R², anomaly R² and MSE from sums (..., len(SUM_KEYS)) of pooled days."""
    n, sse, sy, syy, sa, saa = np.moveaxis(np.asarray(sums, dtype=np.float64), -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sst = syy - sy**2 / n
        ssa = saa - sa**2 / n
        mse = np.where(n > 0, sse / n, np.nan)
    return r2_from_sse(sse, sst), r2_from_sse(sse, ssa), mse


def bootstrap_sums(per_seed: list[list[dict[str, float]]], n_boot: int = 2000,
                   level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean over seeds and bootstrap intervals (years x seeds) of pooled R² and anomaly R².

    ``per_seed[s][y]``: seed s's sums for year y (the same years for every seed).
    """
    v = np.asarray([[[r[k] for k in SUM_KEYS] for r in recs] for recs in per_seed],
                   dtype=np.float64)  # (seeds, years, sums)
    r2, ar2, mse = _pooled(v.sum(axis=1))  # each seed's model, all years pooled
    out = {"r2_mean": float(np.nanmean(r2)), "anom_r2_mean": float(np.nanmean(ar2)),
           "mse_mean": float(np.nanmean(mse))}
    if v.shape[1] < 2 and v.shape[0] < 2:
        lo = {k: out[f"{k}_mean"] for k in ("r2", "anom_r2")}
        return {**out, **{f"{k}_ci_low": x for k, x in lo.items()},
                **{f"{k}_ci_high": x for k, x in lo.items()}}
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, v.shape[1], size=(n_boot, v.shape[1]))
    ss = rng.integers(0, v.shape[0], size=(n_boot, v.shape[1]))
    br2, bar2, _ = _pooled(v[ss, ys].sum(axis=1))
    q = [50 * (1 - level), 50 * (1 + level)]
    for key, b in (("r2", br2), ("anom_r2", bar2)):
        lo, hi = np.nanpercentile(b, q) if np.isfinite(b).any() else (np.nan, np.nan)
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = float(lo), float(hi)
    return out


def aggregate_sites(units: list, lengths: tuple[int, ...], sites: tuple[str, ...]
                    ) -> list[dict[str, Any]]:
    """Rows per (site, L, part) from the units' ``{part}_site_years`` attributes."""
    rows = []
    for site in sites:
        for L in lengths:
            mine = sorted((t for t in units if t.params.get("sequence_length") == L),
                          key=lambda t: t.params.get("seed"))
            for part, _ in PARTS:
                recs = [(t.user_attrs.get(f"{part}_site_years") or {}).get(site) for t in mine]
                if not recs or not all(recs):
                    continue
                rows.append({"site": site, "sequence_length": L, "split": part,
                             **bootstrap_sums(recs), "n_models": len(recs),
                             "n_samples": int(sum(r["n"] for r in recs[0])),
                             "years": [r["year"] for r in recs[0]]})
    return rows


def atlas_figures(rows: list[dict[str, Any]], site_rows: list[dict[str, Any]],
                  sites: tuple[str, ...], title: str) -> tuple[Any, Any]:
    """(matplotlib figure, plotly figure): R², anomaly R² (CV) and held-out R² against L,
    one line per site with its interval and the pooled curve in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    colors = plt.get_cmap("tab10")
    panels = (("cv", "r2", "CV R²"), ("cv", "anom_r2", "CV anomaly R²"),
              ("eval", "r2", "held-out R² (never chooses)"))
    pfig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    fig = go.Figure()
    curves = [(s, [r for r in site_rows if r["site"] == s], colors(i % 10), 1.2)
              for i, s in enumerate(sites)] + [("all sites", rows, "black", 2.5)]
    for name, rr, color, lw in curves:
        for ax, (part, key, label) in zip(axes, panels, strict=True):
            pr = [r for r in rr if r["split"] == part]
            if not pr:
                continue
            x = [r["sequence_length"] for r in pr]
            m = [r[f"{key}_mean"] for r in pr]
            lo = [r[f"{key}_ci_low"] for r in pr]
            hi = [r[f"{key}_ci_high"] for r in pr]
            ax.plot(x, m, "o-", color=color, lw=lw, label=name)
            ax.fill_between(x, lo, hi, color=color, alpha=0.12)
            ax.set_xlabel("sequence length L (days)")
            ax.set_ylabel(label)
            if part == "cv" and key == "r2":
                c = color if isinstance(color, str) else matplotlib.colors.to_hex(color)
                fig.add_trace(go.Scatter(
                    x=x, y=m, name=name, mode="lines+markers",
                    line={"color": c, "width": lw + 0.5},
                    error_y={"type": "data", "symmetric": False, "array": np.subtract(hi, m),
                             "arrayminus": np.subtract(m, lo)}))
    axes[0].legend(fontsize=7)
    axes[0].set_title("Skill vs L per site (95% CI: years x seeds)")
    axes[1].set_title("Anomaly skill (observed - climatology)")
    axes[2].set_title("Held-out years")
    pfig.suptitle(title)
    pfig.tight_layout()
    fig.update_layout(title=f"{title}: CV R² per site", xaxis_title="L (days)",
                      yaxis_title="R²", xaxis_type="log")
    return pfig, fig


ATLAS_NOTE = (
    "Per site: the R² of all the site's validation days pooled (with --cv sites, the site when "
    "the whole site was held out), mean over seeds; 95% interval: bootstrap over the site's "
    "season years and the seeds together (each replicate draws years with replacement and one "
    "seed per drawn year, and pools the drawn days). All sites: the pooled curve (mean over "
    "the folds, as the study's CV R²; bootstrap over folds x seeds).")

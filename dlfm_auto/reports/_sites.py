"""The per-site part of ``report final`` on a multi-site study (issue 15).

Each site is scored twice, both times beside the baselines on exactly the same days:

* held out: the final models (trained on every site's training years) on the site's own
  held-out years; the climatology there is the mean seasonal cycle of the training data of all
  sites pooled, the linear model is fitted on the same pooled training part;
* CV: the best trial's ``site_r2`` (with ``cv="sites"`` the R² of the site when the whole site
  was held out; with ``cv="years"`` its days of the pooled year folds), beside the baselines'
  R² per site on the same folds (``dataset_baselines(...)["cv_sites"]``).

A one-site study has none of this: :func:`site_rows` gives no rows and the report is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlfm_auto.training import group_scores

#: Baselines drawn beside the model in the per-site figure, in this order when present.
FIGURE_BASELINES = ("climatology", "linear", "persistence")
#: R² below this is drawn at the floor with its value written on the bar (a site at -4 would
#: otherwise flatten every other bar).
R2_FLOOR = -1.5


def site_rows(ds: Any, split: Any, ens: np.ndarray, obs: np.ndarray, held: dict[str, Any],
              cv_site_r2: dict[str, float] | None,
              cv_site_baselines: dict[str, dict[str, float]] | None) -> list[dict[str, Any]]:
    """One row per site: held-out R² of the ensemble and the baselines, then CV R² of the best
    trial and the baselines. ``held``: ``dataset_baselines(ds)["heldout"]``. Empty for one
    site."""
    if not ds.multi_site or split.val_sites is None:
        return []
    model = group_scores(obs, ens, split.val_sites)
    base = held.get("per_site") or {}
    rows = []
    for name in ds.site_names:
        sc = model.get(name)
        row: dict[str, Any] = {
            "site": name, "heldout_years": ", ".join(map(str, ds.site_eval_years.get(name, ()))),
            "n": sc["n"] if sc else 0, "model_r2": sc["r2"] if sc else None,
            "model_mse": sc["mse"] if sc else None}
        for b in sorted(base):
            row[f"{b}_r2"] = (base[b].get(name) or {}).get("r2")
        row["cv_model_r2"] = (cv_site_r2 or {}).get(name)
        for b in sorted(cv_site_baselines or {}):
            row[f"cv_{b}_r2"] = (cv_site_baselines or {})[b].get(name)
        rows.append(row)
    return rows


def site_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The table's columns in the rows' order (baselines vary with the study's settings)."""
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    return cols


def site_display(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows for the Markdown/HTML tables: "n/a" where a site has no score (with
    ``cv="years"``, a site whose days fall in no fold year; metrics.json keeps null)."""
    return [{k: "n/a" if v is None else v for k, v in r.items()} for r in rows]


def site_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over sites (the issue's headline figure) and the sites below zero."""
    def med(key: str) -> float | None:
        v = [r[key] for r in rows if isinstance(r.get(key), int | float)
             and np.isfinite(r[key])]
        return float(np.median(v)) if v else None

    return {"median_heldout_r2": med("model_r2"), "median_cv_r2": med("cv_model_r2"),
            "sites_below_zero_heldout": [r["site"] for r in rows
                                         if r.get("model_r2") is not None and r["model_r2"] < 0]}


def _bars(rows: list[dict[str, Any]], prefix: str) -> list[tuple[str, list[float | None]]]:
    """(label, R² per site) for the model and each baseline present, for one panel."""
    out = [("model", [r.get(f"{prefix}model_r2") for r in rows])]
    for b in FIGURE_BASELINES:
        key = f"{prefix}{b}_r2"
        if any(key in r for r in rows):
            out.append((b, [r.get(key) for r in rows]))
    return out


_PANELS = (("", "held-out years (final models)"), ("cv_", "CV (best trial, same folds)"))
_COLORS = {"model": "#1f77b4", "climatology": "#d62728", "linear": "#2ca02c",
           "persistence": "#9467bd"}


def write_site_png(folder: Path, rows: list[dict[str, Any]]) -> None:
    """``per_site.png``: per site, the model's R² beside the baselines, held-out and CV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["site"] for r in rows]
    x = np.arange(len(names))
    every = [a for prefix, _ in _PANELS for _, vals in _bars(rows, prefix) for a in vals
             if a is not None and np.isfinite(a)]
    floor = max(R2_FLOOR, min([0.0, *every]) - 0.1)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(names) + 4), 4.2), sharey=True)
    for ax, (prefix, title) in zip(axes, _PANELS, strict=True):
        bars = _bars(rows, prefix)
        w = 0.8 / len(bars)
        for i, (label, vals) in enumerate(bars):
            v = np.array([np.nan if a is None else a for a in vals], dtype=np.float64)
            shown = np.maximum(v, floor)
            pos = x - 0.4 + w * (i + 0.5)
            ax.bar(pos, shown, w, label=label, color=_COLORS.get(label))
            for p, a in zip(pos, v, strict=True):
                if np.isfinite(a) and a < floor:
                    ax.text(p, floor, f"{a:.1f}", ha="center", va="bottom", fontsize=7,
                            rotation=90)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(title)
        ax.set_ylim(bottom=floor)
    axes[0].set_ylabel("R²")
    axes[0].legend(fontsize=8)
    fig.suptitle("R² per site beside the baselines on the same days")
    fig.tight_layout()
    fig.savefig(folder / "per_site.png", dpi=110)
    plt.close(fig)


def site_figure(rows: list[dict[str, Any]]) -> Any:
    """The same comparison as :func:`write_site_png`, as an interactive figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [r["site"] for r in rows]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True,
                        subplot_titles=[t for _, t in _PANELS])
    for col, (prefix, _) in enumerate(_PANELS, start=1):
        for label, vals in _bars(rows, prefix):
            fig.add_trace(go.Bar(x=names, y=vals, name=label, legendgroup=label,
                                 showlegend=col == 1,
                                 marker={"color": _COLORS.get(label, "#7f7f7f")}),
                          row=1, col=col)
    fig.update_layout(title="R² per site beside the baselines on the same days",
                      barmode="group", yaxis_title="R²")
    return fig

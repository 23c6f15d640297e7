"""``report final``: retrain the best parameters, evaluate on the held-out years.

The final models train on all training years for a fixed budget, the mean best epoch of the
best trial's folds (or its boosting rounds), with no early stopping: the held-out years are
only predicted, never used to choose anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlfm_auto.data import prepare
from dlfm_auto.models import get_family
from dlfm_auto.reports._common import (
    REPORTS_DIR,
    html_page,
    html_table,
    md_table,
    report_dir,
    report_folder,
    skill,
    write_json,
)
from dlfm_auto.reports._load import StudyContext, require_eval_years, study_context
from dlfm_auto.reports._options import check_options
from dlfm_auto.training import predict, train_split


def final_budget(ctx: StudyContext) -> int:
    """Epochs (or boosting rounds) for the final models, from the CV folds' best epochs."""
    epochs = ctx.best.user_attrs.get("best_epochs") or [ctx.params.get("epochs", 100)]
    budget = max(1, int(round(float(np.mean(epochs)))) + 1)
    return min(budget, ctx.spec.max_epochs) if ctx.spec.max_epochs else budget


def train_final_models(ctx: StudyContext, num_models: int, *, device: str | None = None,
                       progress: Any = None) -> tuple[Any, list[Any]]:
    """``num_models`` seeds trained on the training years; returns (split, results)."""
    fam = get_family(ctx.spec.family)
    ds = prepare(ctx.spec.prep.replace(sequence_length=ctx.sequence_length))
    split = ds.eval_split()
    budget = final_budget(ctx)
    results = []
    for seed in range(num_models):
        results.append(train_split(fam, ctx.params, split, max_epochs=budget, patience=10**9,
                                   seed=ctx.spec.seed + 100 + seed, device=device,
                                   restore_best=False))
        if progress is not None:
            progress()
    return split, results


def final_report(storage_url: str, study_name: str, *, num_models: int = 5,
                 out_root: Path = REPORTS_DIR, data: str | None = None,
                 device: str | None = None) -> Path:
    from rich.progress import Progress

    check_options(num_models=num_models)
    dest = report_dir(out_root, study_name, "final")  # safe and writable, before the work
    ctx = require_eval_years(study_context(storage_url, study_name, data))
    fam = get_family(ctx.spec.family)
    with Progress(transient=True) as bar:
        task = bar.add_task(f"training {num_models} final models", total=num_models)
        split, results = train_final_models(ctx, num_models, device=device,
                                            progress=lambda: bar.advance(task))
    preds = {"train": [], "eval": []}
    for r in results:
        preds["train"].append(predict(fam, r.model, split.X_train))
        preds["eval"].append(predict(fam, r.model, split.X_val))
    obs = {"train": split.y_train.astype(np.float64), "eval": split.y_val.astype(np.float64)}
    rows = []
    for part in ("train", "eval"):
        for i, p in enumerate(preds[part]):
            rows.append({"model": f"seed {i}", "split": part, **skill(obs[part], p)})
        rows.append({"model": "ensemble mean", "split": part,
                     **skill(obs[part], np.mean(preds[part], axis=0))})
    cv = {"cv_r2": ctx.best.value, "cv_r2_sd": ctx.best.user_attrs.get("cv_r2_sd"),
          "fold_r2": ctx.best.user_attrs.get("fold_r2"),
          "fold_val_years": ctx.best.user_attrs.get("fold_val_years")}
    metrics = {
        "study": study_name, "family": ctx.spec.family, "site": ctx.spec.site,
        "data_file": ctx.spec.data_name, "target": ctx.spec.target,
        "inputs": list(ctx.spec.inputs), "best_trial": ctx.best.number,
        "params": ctx.params, "sequence_length": ctx.sequence_length,
        "epochs_budget": final_budget(ctx), "num_models": num_models,
        "eval_years": list(split.val_years), "n_train": len(split.y_train),
        "n_eval": len(split.y_val), **cv, "rows": rows,
    }
    figs = _figures(ctx, split, preds, obs, results)
    with report_folder(dest) as tmp:
        write_json(tmp / "metrics.json", metrics)
        _write_pngs(tmp, split, preds, obs, results, ylabel=nee_label(ctx))
        cols = ["model", "split", "r2", "mse", "rmse", "bias", "nse", "n"]
        ens = [r for r in rows if r["model"] == "ensemble mean"]
        summary = (
            f"Best trial #{ctx.best.number} of study `{study_name}` ({ctx.spec.family}, "
            f"{ctx.spec.data_name}, target {ctx.spec.target}); CV R² {ctx.best.value:.4f}. "
            f"{num_models} models retrained on the training years for {final_budget(ctx)} "
            f"epochs; held-out years {', '.join(map(str, split.val_years))} were never used "
            f"for tuning. Ensemble held-out R² {ens[1]['r2']:.4f}, RMSE {ens[1]['rmse']:.4f}."
        )
        md = [f"# Final report: {study_name}", "", summary, "",
              "## Parameters", "", md_table([{"param": k, "value": str(v)}
                                             for k, v in sorted(ctx.params.items())],
                                            ["param", "value"]), "",
              "## Skill", "", md_table(rows, cols), "",
              "![observed vs predicted](timeseries.png)", "", "![scatter](scatter.png)", "",
              "![learning curves](learning_curves.png)", ""]
        (tmp / "report.md").write_text("\n".join(md))
        (tmp / "index.html").write_text(html_page(
            f"Final report: {study_name}",
            [("Summary", f"<p>{summary}</p>"), ("Skill", html_table(rows, cols))], figs))
    _attach_to_dashboard(ctx, figs[0], summary)
    return dest


def _figures(ctx: StudyContext, split, preds, obs, results) -> list[Any]:
    import optuna.visualization as ov
    import plotly.graph_objects as go

    days = split.val_days.astype("datetime64[D]").astype(str)
    ens = np.mean(preds["eval"], axis=0)
    lo, hi = np.min(preds["eval"], axis=0), np.max(preds["eval"], axis=0)
    ts = go.Figure([
        go.Scatter(x=days, y=hi, line={"width": 0}, showlegend=False, hoverinfo="skip"),
        go.Scatter(x=days, y=lo, fill="tonexty", line={"width": 0}, name="ensemble range",
                   fillcolor="rgba(31,119,180,0.25)"),
        go.Scatter(x=days, y=ens, name="ensemble mean", line={"color": "#1f77b4"}),
        go.Scatter(x=days, y=obs["eval"], name="observed", mode="markers",
                   marker={"size": 4, "color": "black"}),
    ])
    ts.update_layout(title="Held-out years: observed vs predicted daily daylight NEE",
                     yaxis_title=nee_label(ctx))
    lim = [float(min(obs["eval"].min(), ens.min())), float(max(obs["eval"].max(), ens.max()))]
    sc = go.Figure([go.Scatter(x=obs["eval"], y=ens, mode="markers", name="held-out",
                               marker={"size": 4}),
                    go.Scatter(x=lim, y=lim, mode="lines", name="1:1",
                               line={"dash": "dash", "color": "gray"})])
    sc.update_layout(title="Held-out: ensemble mean vs observed", xaxis_title="observed",
                     yaxis_title="predicted")
    lc = go.Figure()
    for i, r in enumerate(results):
        for key, values in (r.history or {}).items():
            lc.add_trace(go.Scatter(y=values, name=f"seed {i} {key}", mode="lines"))
    lc.update_layout(title="Learning curves of the final models", xaxis_title="epoch")
    figs = [ts, sc, lc]
    study = ctx.study
    for make in (ov.plot_optimization_history, ov.plot_param_importances,
                 ov.plot_parallel_coordinate, ov.plot_intermediate_values):
        try:
            figs.append(make(study))
        except Exception:  # e.g. importances need 2+ complete trials with varying params
            continue
    return figs


def nee_label(ctx: StudyContext) -> str:
    """The target's axis label in the units its samples hold (``SourceInfo.target_units``)."""
    from dlfm_auto.data import load_daily

    return f"NEE ({load_daily(ctx.spec.prep)[2].target_units})"


def _write_pngs(folder: Path, split, preds, obs, results,
                ylabel: str = "NEE (µmol m-2 s-1)") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = split.val_days.astype("datetime64[D]")
    ens = np.mean(preds["eval"], axis=0)
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.fill_between(days, np.min(preds["eval"], 0), np.max(preds["eval"], 0), alpha=0.3,
                    label="ensemble range", step="mid")
    ax.plot(days, ens, lw=1, label="ensemble mean")
    ax.plot(days, obs["eval"], "k.", ms=2, label="observed")
    ax.set_ylabel(ylabel)
    ax.set_title("Held-out years: observed vs predicted")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(folder / "timeseries.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(obs["eval"], ens, ".", ms=3)
    lim = [min(obs["eval"].min(), ens.min()), max(obs["eval"].max(), ens.max())]
    ax.plot(lim, lim, "--", color="gray")
    ax.set_xlabel("observed")
    ax.set_ylabel("predicted (ensemble mean)")
    fig.tight_layout()
    fig.savefig(folder / "scatter.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, r in enumerate(results):
        for key, values in (r.history or {}).items():
            ax.plot(values, lw=1, label=f"seed {i} {key}")
    ax.set_xlabel("epoch")
    ax.set_title("Learning curves")
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "learning_curves.png", dpi=110)
    plt.close(fig)


def _attach_to_dashboard(ctx: StudyContext, fig: Any, summary: str) -> None:
    """Show the main figure and the summary on the study's dashboard page."""
    try:
        from optuna_dashboard import save_note, save_plotly_graph_object

        save_plotly_graph_object(ctx.study, fig)
        save_note(ctx.study, f"## Final report\n\n{summary}\n")
    except Exception as e:  # the report itself is written; the dashboard is a bonus
        import warnings

        warnings.warn(f"could not attach the report to the dashboard: {e}", stacklevel=2)

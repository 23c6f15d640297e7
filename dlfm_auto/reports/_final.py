"""``report final``: retrain the best parameters, evaluate on the held-out years.

The final models train on all training years for a fixed budget, the mean of the epochs (or
boosting rounds) the best trial's folds chose on their inner training years, with no early
stopping: the held-out years are only predicted, never used to choose anything. A random
forest chooses nothing: it keeps its own number of trees. The samples are the best trial's
(:func:`~dlfm_auto.study._objective.trial_prep`: matched like its CV), and every skill figure
stands beside the baselines on the same days (climatology, linear, persistence).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dlfm_auto.data import prepare
from dlfm_auto.models import get_family
from dlfm_auto.reports._common import (
    MONTHS,
    REPORTS_DIR,
    days_per_month,
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
from dlfm_auto.reports._sites import (
    site_columns,
    site_display,
    site_figure,
    site_rows,
    site_summary,
    write_site_png,
)
from dlfm_auto.study._objective import skill_summary
from dlfm_auto.training import baselines, predict, r2_mse, train_many
from dlfm_auto.training._ensemble import Ensemble

#: Files of the final report that ``predict`` reads (the trained ensemble) and users open.
ENSEMBLE_FILE = "ensemble.pt"
PREDICTIONS_FILE = "predictions.csv"
EXPORT_NOTE = (f"`{PREDICTIONS_FILE}`: every training and held-out day (observed, ensemble mean, "
               f"spread, climatology). `{ENSEMBLE_FILE}`: the trained ensemble; daily NEE for "
               "any file with the same drivers, gaps included: `python -m dlfm_auto predict "
               "{study} --data FILE --out CSV`.")


def final_budget(ctx: StudyContext) -> int | None:
    """Epochs (or boosting rounds) for the final models, from the CV folds' inner choices.

    None for a random forest: its folds chose nothing (``best_epochs`` is 0 there), so its
    budget is its own ``n_estimators``, capped like in CV by the study's ``max_epochs``.
    """
    fam = get_family(ctx.spec.family)
    if fam.kind == "tree" and fam.name != "xgboost":
        return ctx.spec.max_epochs
    epochs = ctx.best.user_attrs.get("best_epochs") or [ctx.params.get("epochs", 100)]
    budget = max(1, int(round(float(np.mean(epochs)))) + 1)
    return min(budget, ctx.spec.max_epochs) if ctx.spec.max_epochs else budget


def train_final_models(ctx: StudyContext, num_models: int, *, progress: Any = None
                       ) -> tuple[Any, list[Any]]:
    """``num_models`` seeds trained on the training years; returns (split, results)."""
    fam = get_family(ctx.spec.family)
    ds = prepare(ctx.prep)
    split = ds.eval_split()
    budget = final_budget(ctx)
    # the seeds train as one batched model where it applies (same models as one by one)
    results = train_many(fam, ctx.params, [split] * num_models,
                         [ctx.spec.seed + 100 + seed for seed in range(num_models)],
                         max_epochs=budget, patience=10**9, restore_best=False)
    if progress is not None:
        for _ in results:
            progress()
    return split, results


def final_report(storage_url: str, study_name: str, *, num_models: int = 5,
                 out_root: Path = REPORTS_DIR, data: str | None = None) -> Path:
    from rich.progress import Progress

    check_options(num_models=num_models)
    dest = report_dir(out_root, study_name, "final")  # safe and writable, before the work
    ctx = require_eval_years(study_context(storage_url, study_name, data))
    fam = get_family(ctx.spec.family)
    ds = prepare(ctx.prep)
    with Progress(transient=True) as bar:
        task = bar.add_task(f"training {num_models} final models", total=num_models)
        split, results = train_final_models(ctx, num_models, progress=lambda: bar.advance(task))
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
    ens_eval = np.mean(preds["eval"], axis=0)
    base = baselines.dataset_baselines(ds)
    held = base["heldout"] or {}
    for name, sc in sorted((held.get("baselines") or {}).items()):
        rows.append({"model": f"baseline: {name}", "split": "eval", "r2": sc["r2"],
                     "mse": sc["mse"], "rmse": float(np.sqrt(sc["mse"])), "n": len(obs["eval"])})
    clim_mse = (held.get("baselines") or {}).get("climatology", {}).get("mse")
    ens_mse = float(np.mean((ens_eval - obs["eval"]) ** 2))
    heldout_skill = {
        "skill_vs_climatology": 1 - ens_mse / clim_mse if clim_mse else None,
        "anomaly_r2": baselines.anomaly_r2(ens_mse, len(obs["eval"]),
                                           baselines.anomaly_sst(split)),
    }
    per_year = _per_year(ds, split, ens_eval, obs["eval"], held)
    sk = skill_summary(ctx.spec, ctx.best)
    attrs = ctx.best.user_attrs
    cv = {"cv_r2": ctx.best.value, "cv_r2_sd": attrs.get("cv_r2_sd"),
          "fold_r2": attrs.get("fold_r2"),
          "fold_val_years": attrs.get("fold_val_years"),
          "cv_baselines": sk["baselines"], "cv_skill_vs_climatology": sk["skill_vs_climatology"],
          "cv_anomaly_r2": sk["anomaly_r2"]}
    per_site = site_rows(ds, split, ens_eval, obs["eval"], held, attrs.get("site_r2"),
                         sk.get("site_baselines"))
    sites: dict[str, Any] = {}
    if per_site:  # several sites (a one-site report has none of these keys)
        cv.update({k: attrs.get(k) for k in ("fold_labels", "site_r2", "median_site_r2",
                                             "pooled_r2")})
        cv["cv_site_baselines"] = sk.get("site_baselines")
        sites = {"sites": list(ds.site_names), "cv_mode": ds.config.cv,
                 "data_files": [s.name for s in ds.sources],
                 "site_eval_years": {k: list(v) for k, v in ds.site_eval_years.items()},
                 "per_site": per_site, "per_site_summary": site_summary(per_site)}
    cv_days = np.concatenate([s.val_days for s in ds.cv_splits()])
    metrics = {
        "study": study_name, "family": ctx.spec.family, "site": ctx.spec.site,
        "data_file": ctx.spec.data_name, "target": ctx.spec.target,
        "inputs": list(ctx.spec.inputs), "best_trial": ctx.best.number,
        "params": ctx.params, "sequence_length": ctx.sequence_length,
        "epochs_budget": final_budget(ctx), "num_models": num_models,
        "eval_years": list(split.val_years), "n_train": len(split.y_train),
        "n_eval": len(split.y_val), **cv, "rows": rows, "heldout": heldout_skill,
        "per_year": per_year, **sites, "match_length": ds.config.match_length,
        "days_per_month": {"cv_validation": days_per_month(cv_days),
                           "heldout": days_per_month(split.val_days)},
    }
    label = f"NEE ({ds.source.target_units})"
    figs = _figures(ctx, split, preds, obs, results, label)
    if per_site:
        figs.insert(1, site_figure(per_site))
    clim = baselines.climatology(split.train_days, split.y_train)
    ensemble = Ensemble.from_training(
        ctx.spec.family, ctx.params, [r.model for r in results], split.norm, ds.config,
        ds.source, clim, meta={
            "study": study_name, "site": ctx.spec.site, "data_file": ctx.spec.data_name,
            **({"sites": list(ds.site_names)} if ds.multi_site else {}),
            "data_sha256": ctx.spec.data_sha256, "best_trial": ctx.best.number,
            "train_years": [int(y) for y in ds.train_years], "eval_years": list(split.val_years),
            "cv_r2": ctx.best.value, "heldout_r2": skill(obs["eval"], ens_eval)["r2"]},
        sites=ds.site_inputs)
    with report_folder(dest) as tmp:
        write_json(tmp / "metrics.json", metrics)
        ensemble.save(tmp / ENSEMBLE_FILE)
        prediction_table(split, preds, obs, clim, None if not ds.multi_site else
                         ds.sample_sites[~ds.heldout]).to_csv(
            tmp / PREDICTIONS_FILE, index=False, float_format="%.6g")
        _write_pngs(tmp, split, preds, obs, results, ylabel=label)
        if per_site:
            write_site_png(tmp, per_site)
        cols = ["model", "split", "r2", "mse", "rmse", "bias", "nse", "n"]
        ens = [r for r in rows if r["model"] == "ensemble mean"]
        budget = final_budget(ctx)
        summary = (
            f"Best trial #{ctx.best.number} of study `{study_name}` ({ctx.spec.family}, "
            f"{ctx.spec.data_name}, target {ctx.spec.target}); CV R² {ctx.best.value:.4f} "
            f"(climatology {_f(sk['baselines'].get('climatology', {}).get('cv_r2'))}, linear "
            f"{_f(sk['baselines'].get('linear', {}).get('cv_r2'))} on the same folds; skill vs "
            f"climatology {_f(sk['skill_vs_climatology'])}, anomaly R² {_f(sk['anomaly_r2'])}). "
            f"{num_models} models retrained on the training years for "
            + (f"{budget} epochs/rounds (the folds' inner choices)" if budget else
               "their full number of trees")
            + f"; held-out years {', '.join(map(str, split.val_years))} were never used "
            f"for tuning. Ensemble held-out R² {ens[1]['r2']:.4f}, RMSE {ens[1]['rmse']:.4f}; "
            f"climatology {_f((held.get('baselines') or {}).get('climatology', {}).get('r2'))}; "
            f"skill vs climatology {_f(heldout_skill['skill_vs_climatology'])}, anomaly R² "
            f"{_f(heldout_skill['anomaly_r2'])}. {len(split.y_val)} held-out and "
            f"{len(cv_days)} CV validation days (per month below)."
        ) + (_site_sentence(ds, sites["per_site_summary"]) if per_site else "")
        ycols = ["year", "n", "model_r2", "model_mse", *[c for c in per_year[0] if
                 c.startswith(("climatology", "linear", "persistence"))]] if per_year else []
        months = [{"days": k, **v} for k, v in metrics["days_per_month"].items()]
        scols, shown = site_columns(per_site), site_display(per_site)
        ytitle = "Held-out years beside the baselines" + (
            " (each year pooled over the sites that hold it)" if per_site else "")
        mcols = ["days", *MONTHS]
        md = [f"# Final report: {study_name}", "", summary, "",
              "## Parameters", "", md_table([{"param": k, "value": str(v)}
                                             for k, v in sorted(ctx.params.items())],
                                            ["param", "value"]), "",
              "## Skill", "", md_table(rows, cols), "",
              f"## {ytitle}", "", md_table(per_year, ycols), "",
              *([f"## {SITES_TITLE}", "", SITES_NOTE, "", md_table(shown, scols), "",
                 "![per site](per_site.png)", ""] if per_site else []),
              "## Days used per month", "", md_table(months, mcols), "",
              "## Predictions", "", EXPORT_NOTE.format(study=study_name), "",
              "![observed vs predicted](timeseries.png)", "", "![scatter](scatter.png)", "",
              "![learning curves](learning_curves.png)", ""]
        (tmp / "report.md").write_text("\n".join(md))
        (tmp / "index.html").write_text(html_page(
            f"Final report: {study_name}",
            [("Summary", f"<p>{summary}</p>"), ("Skill", html_table(rows, cols)),
             (ytitle, html_table(per_year, ycols)),
             *([(SITES_TITLE, f"<p>{SITES_NOTE}</p>" + html_table(shown, scols))]
               if per_site else []),
             ("Days used per month", html_table(months, mcols)),
             ("Predictions", f"<p>{EXPORT_NOTE.format(study=study_name)}</p>")], figs))
    _attach_to_dashboard(ctx, figs[0], summary)
    return dest


def prediction_table(split: Any, preds: dict[str, list[np.ndarray]],
                     obs: dict[str, np.ndarray], clim: np.ndarray,
                     train_sites: np.ndarray | None = None) -> Any:
    """``predictions.csv``: every training and held-out day of the report, one row each.

    ``predicted`` is the ensemble mean, ``predicted_sd`` the spread of its models (ddof 0),
    ``climatology`` the training part's day-of-year mean (the reference to beat; across sites
    the mean seasonal cycle of all sites' training years). Several sites: ``train_sites`` (the
    site of each training sample) and ``split.val_sites`` add a ``site`` column, rows then by
    site and date.
    """
    import pandas as pd

    parts = []
    for part, days in (("train", split.train_days), ("eval", split.val_days)):
        p = np.asarray(preds[part])
        frame = pd.DataFrame({
            "date": np.asarray(days).astype("datetime64[D]").astype(str), "split": part,
            "observed": obs[part], "predicted": p.mean(axis=0), "predicted_sd": p.std(axis=0),
            "climatology": clim[baselines.day_of_year(days)]})
        if train_sites is not None:
            frame.insert(0, "site", split.val_sites if part == "eval" else train_sites)
        parts.append(frame)
    keys = ["site", "date"] if train_sites is not None else "date"
    return pd.concat(parts).sort_values(keys, kind="stable").reset_index(drop=True)


def curve_panels(history: dict[str, list[float]] | None
                 ) -> tuple[list[float], tuple[dict[str, list[float]], dict[str, list[float]]]]:
    """x (the epochs evaluated) and the two panels of a learning curve: losses, then R².

    ``epoch`` is the x axis, never a series; each quantity goes on the axis of its unit.
    """
    h = dict(history or {})
    n = max((len(v) for v in h.values()), default=0)
    x = list(h.pop("epoch", range(n)))
    losses = {k: v for k, v in h.items() if k.endswith("loss")}
    r2 = {k: v for k, v in h.items() if k.endswith("r2")}
    return x, (losses, r2)


def _f(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) and np.isfinite(v) else "n/a"


SITES_TITLE = "Per site beside the baselines"
SITES_NOTE = (
    "Held out (`model_r2` and the baselines without `cv_`): the final models, trained on every "
    "site's training years, on each site's own held-out years (`heldout_years`); the "
    "climatology is the mean seasonal cycle of the training years of all sites, the linear "
    "model is fitted on them too. CV (`cv_`): the best trial's R² for the site (with "
    "--cv sites: when the whole site was held out) beside the baselines on the same folds "
    "(with --cv sites the climatology is the other sites' mean seasonal cycle).")


def _site_sentence(ds: Any, summary: dict[str, Any]) -> str:
    below = summary["sites_below_zero_heldout"]
    return (f" {len(ds.site_names)} sites ({ds.config.cv} CV): median held-out R² over sites "
            f"{_f(summary['median_heldout_r2'])}, median CV R² {_f(summary['median_cv_r2'])}; "
            + (f"held-out R² below 0 at {', '.join(below)}." if below else
               "no site below 0 held out.") + " Per site below.")


def _per_year(ds: Any, split: Any, ens: np.ndarray, obs: np.ndarray, held: dict
              ) -> list[dict[str, Any]]:
    """Ensemble and baselines per held-out season year (the skill table's second part)."""
    sy = ds.season_year[ds.heldout]
    out = []
    for y in ds.eval_years:
        m = sy == y
        r2, mse = r2_mse(obs[m], ens[m])
        row: dict[str, Any] = {"year": int(y), "n": int(m.sum()), "model_r2": r2,
                               "model_mse": mse}
        for name, sc in sorted(((held.get("per_year") or {}).get(str(y)) or {}).items()):
            row[f"{name}_r2"], row[f"{name}_mse"] = sc["r2"], sc["mse"]
        out.append(row)
    return out


def _site_parts(split: Any) -> list[tuple[str, np.ndarray]]:
    """(site, mask over the held-out samples) per site; one part ("", all) for one site.
    Each site's days run on their own axis: sites share calendar dates."""
    if split.val_sites is None:
        return [("", np.ones(len(split.y_val), dtype=bool))]
    return [(str(s), split.val_sites == s) for s in dict.fromkeys(split.val_sites.tolist())]


def _figures(ctx: StudyContext, split, preds, obs, results, ylabel: str) -> list[Any]:
    import optuna.visualization as ov
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    days = split.val_days.astype("datetime64[D]").astype(str)
    ens = np.mean(preds["eval"], axis=0)
    lo, hi = np.min(preds["eval"], axis=0), np.max(preds["eval"], axis=0)
    parts = _site_parts(split)
    ts = make_subplots(rows=len(parts), cols=1, subplot_titles=[s for s, _ in parts]
                       if len(parts) > 1 else None)
    for row, (_, m) in enumerate(parts, start=1):
        first = row == 1
        for trace in (
            go.Scatter(x=days[m], y=hi[m], line={"width": 0}, showlegend=False,
                       hoverinfo="skip"),
            go.Scatter(x=days[m], y=lo[m], fill="tonexty", line={"width": 0},
                       name="ensemble range", fillcolor="rgba(31,119,180,0.25)",
                       showlegend=first),
            go.Scatter(x=days[m], y=ens[m], name="ensemble mean", line={"color": "#1f77b4"},
                       showlegend=first),
            go.Scatter(x=days[m], y=obs["eval"][m], name="observed", mode="markers",
                       marker={"size": 4, "color": "black"}, showlegend=first),
        ):
            ts.add_trace(trace, row=row, col=1)
        ts.update_yaxes(title_text=ylabel, row=row, col=1)
    ts.update_layout(title="Held-out years: observed vs predicted daily daylight NEE",
                     height=max(450, 300 * len(parts)))
    lim = [float(min(obs["eval"].min(), ens.min())), float(max(obs["eval"].max(), ens.max()))]
    sc = go.Figure([go.Scatter(x=obs["eval"], y=ens, mode="markers", name="held-out",
                               marker={"size": 4}),
                    go.Scatter(x=lim, y=lim, mode="lines", name="1:1",
                               line={"dash": "dash", "color": "gray"})])
    sc.update_layout(title="Held-out: ensemble mean vs observed", xaxis_title="observed",
                     yaxis_title="predicted")
    from plotly.subplots import make_subplots

    lc = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for i, r in enumerate(results):
        x, panels = curve_panels(r.history)
        for row, panel in enumerate(panels, start=1):
            for key, values in panel.items():
                lc.add_trace(go.Scatter(x=x, y=values, name=f"seed {i} {key}", mode="lines"),
                             row=row, col=1)
    lc.update_yaxes(title_text="training loss (MSE)", row=1, col=1)
    lc.update_yaxes(title_text="R²", row=2, col=1)
    lc.update_xaxes(title_text="epoch / boosting round", row=2, col=1)
    lc.update_layout(title="Learning curves of the final models (held-out R² is drawn, "
                           "never used to choose)")
    figs = [ts, sc, lc]
    study = ctx.study
    for make in (ov.plot_optimization_history, ov.plot_param_importances,
                 ov.plot_parallel_coordinate, ov.plot_intermediate_values):
        # Optuna warns (UserWarning) when a study has too few trials for importances; the
        # figure says as much, so the warning would only be noise on the user's terminal.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                figs.append(make(study))
            except Exception:  # e.g. importances need 2+ complete trials with varying params
                continue
    return figs


def _write_pngs(folder: Path, split, preds, obs, results,
                ylabel: str = "NEE (µmol m-2 s-1)") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = split.val_days.astype("datetime64[D]")
    ens = np.mean(preds["eval"], axis=0)
    lo, hi = np.min(preds["eval"], 0), np.max(preds["eval"], 0)
    parts = _site_parts(split)
    fig, axes = plt.subplots(len(parts), 1, figsize=(11, 4 if len(parts) == 1 else
                                                    2.6 * len(parts)), squeeze=False)
    for ax, (site, m) in zip(axes[:, 0], parts, strict=True):
        ax.fill_between(days[m], lo[m], hi[m], alpha=0.3, label="ensemble range", step="mid")
        ax.plot(days[m], ens[m], lw=1, label="ensemble mean")
        ax.plot(days[m], obs["eval"][m], "k.", ms=2, label="observed")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{site}: held-out years" if site else
                     "Held-out years: observed vs predicted")
    axes[0, 0].legend(loc="best")
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
    fig, axes = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for i, r in enumerate(results):
        x, panels = curve_panels(r.history)
        for ax, panel in zip(axes, panels, strict=True):
            for key, values in panel.items():
                ax.plot(x, values, lw=1, label=f"seed {i} {key}")
    axes[0].set_ylabel("training loss (MSE)")
    axes[1].set_ylabel("R²")
    axes[1].set_xlabel("epoch / boosting round")
    axes[0].set_title("Learning curves")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "learning_curves.png", dpi=110)
    plt.close(fig)


def _attach_to_dashboard(ctx: StudyContext, fig: Any, summary: str) -> None:
    """Show the main figure and the summary on the study's dashboard page."""
    try:
        from optuna_dashboard import save_plotly_graph_object

        from dlfm_auto.study._notes import save_study_note

        save_plotly_graph_object(ctx.study, fig)
        save_study_note(ctx.study, ctx.spec, f"## Final report\n\n{summary}\n")
    except Exception as e:  # the report itself is written; the dashboard is a bonus
        import warnings

        warnings.warn(f"could not attach the report to the dashboard: {e}", stacklevel=2)

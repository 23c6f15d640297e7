"""``report memory``: skill vs input sequence length, on matched samples.

Every length uses exactly the target days valid at the longest length (matched mode), so a
change in skill comes from memory, not from a change of samples. Each (L, seed) is one unit of
work stored as a trial of a companion Optuna study (``memory-...``): an interrupted report
continues where it stopped, and ``worker`` processes on other machines can share the units.

The curve is measured on the CV folds of the training years (each fold's epoch / rounds chosen
on its inner training year, as in a study). The held-out years are shown beside it, from
models trained on all training years for the folds' mean choice; they never choose anything.
Beside R², the anomaly R² (observed minus the day-of-year climatology of the training part):
memory lives in the anomalies, not in the seasonal cycle. Intervals (95%) combine sampling
and seed uncertainty: a bootstrap that resamples the scored years with replacement and, for
each drawn year, one seed's model (years are the sampling unit: days within a year are
autocorrelated). With 3 folds these intervals are wide, honestly so.

On a multi-site study the report is a memory atlas: one curve per site beside the pooled one
(``reports/_atlas.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from dlfm_auto._errors import UserError
from dlfm_auto.data import PrepareConfig, prepare
from dlfm_auto.models import get_family
from dlfm_auto.reports._atlas import ATLAS_NOTE, aggregate_sites, atlas_figures, site_label
from dlfm_auto.reports._common import (
    REPORTS_DIR,
    check_writable,
    days_per_month,
    html_page,
    html_table,
    md_table,
    report_dir,
    report_folder,
    write_json,
)
from dlfm_auto.reports._options import DEFAULT_LENGTHS, check_options
from dlfm_auto.study._memory_units import MEMORY_ATTR, MemoryUnits, queue_units
from dlfm_auto.study._spec import check_study_name
from dlfm_auto.study._storage import open_storage
from dlfm_auto.training import baselines


def parse_params(text: str) -> dict[str, Any]:
    """``k=v,k=v`` with numbers parsed (``lr=0.01,hidden=8``)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise UserError(f"--params: expected k=v pairs, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        for conv in (int, float):
            try:
                out[k] = conv(v)
                break
            except ValueError:
                continue
        else:
            out[k] = {"true": True, "false": False, "none": None}.get(v.lower(), v)
    return out


def resolve_params(source: str, family: str, storage_url: str, site_study: str) -> dict[str, Any]:
    """Model params from ``best`` (the family's study), a study name, or ``k=v`` pairs."""
    if "=" in source:
        params = parse_params(source)
        base = _default_params(family)
        base.update(params)
        return base
    from dlfm_auto.study._create import load_spec, load_study
    from dlfm_auto.study._objective import model_params
    from dlfm_auto.study._progress import best_trial

    name = site_study if source == "best" else source
    try:
        study = load_study(storage_url, name)
    except UserError as e:
        raise UserError(f"no study to take {family} parameters from ({e}): pass --params "
                        "k=v,k=v (or a study name), or --study-name STUDY") from None
    best = best_trial(study)
    if best is None:
        raise UserError(f"study {name!r} has no complete trial to take parameters from")
    if study.user_attrs.get("family") not in (None, family):
        raise UserError(f"study {name!r} is a {study.user_attrs['family']} study, not {family}")
    return model_params(load_spec(study), best.params)


def _default_params(family: str) -> dict[str, Any]:
    """The first point of the family's DLFM grid: a documented, reproducible default."""
    grid = get_family(family).grid()
    return {k: v[0] for k, v in sorted(grid.items())}


def memory_report(storage_url: str, family: str | None, prep: PrepareConfig | None, *,
                  lengths: tuple[int, ...] | None = None, num_models: int = 3,
                  params_source: str = "best", max_epochs: int | None = None,
                  out_root: Path = REPORTS_DIR,
                  n_jobs: int = 1, study_name: str | None = None, data: str | None = None
                  ) -> Path:
    """The memory curve of ``family`` on ``prep``'s samples; or, with ``study_name``, on that
    study's data and settings (``data``: a moved copy of its file) with its best parameters
    (``params_source="best"``), written to ``<out>/<study>/memory/``."""
    from dlfm_auto.study._processes import run_workers
    from dlfm_auto.study._worker import WorkerOptions

    lengths = DEFAULT_LENGTHS if lengths is None else tuple(lengths)
    check_options(sequence_lengths=lengths, num_models=num_models, max_epochs=max_epochs,
                  n_jobs=n_jobs)
    check_writable(Path(out_root))  # before the work (the folder itself once its name is known)
    if study_name is not None:
        from dlfm_auto.reports._load import check_data_file
        from dlfm_auto.study._create import load_spec, load_study

        report_dir(out_root, study_name, "memory")
        source = load_spec(load_study(storage_url, study_name))
        if family is not None and family != source.family:
            raise UserError(f"study {study_name!r} is a {source.family} study, not {family}")
        family = source.family
        prep = check_data_file(source, data).prep
        prep = _best_site_norm(storage_url, study_name, source, prep, params_source)
        if params_source == "best":
            params_source = study_name
    elif family is None or prep is None:
        raise UserError("report memory: pass FAMILY (with the data options), or --study-name "
                        "STUDY to take the family, data and parameters from a study")
    fam = get_family(family)
    if not fam.sequence and any(L > 1 for L in lengths):
        feeds = getattr(fam, "feeds", ())
        if "flatten" not in feeds and "stats" not in feeds:
            raise UserError(f"{family} sees only today's drivers: use a sequence family")
    lengths = tuple(sorted(set(lengths)))
    ds = prepare(prep.replace(sequence_length=max(lengths), match_length=max(lengths)))
    site = site_label(ds) if ds.multi_site else ds.source.site
    site_study = f"{family}-{site or ds.source.name.split('.')[0]}"
    params = resolve_params(params_source, family, storage_url, site_study)
    if not fam.sequence and "feed" in params and params["feed"] == "today":
        params["feed"] = "flatten"  # a memory curve needs the window
    units = MemoryUnits(family=family, params=params, lengths=lengths, num_models=num_models,
                        prep=prep, max_epochs=max_epochs, data_sha256=ds.source.sha256)
    name = units.study_name(site)
    check_study_name(name)  # a unit study is created below
    dest = report_dir(out_root, study_name or name, "memory")  # before the study is created
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                load_if_exists=True)
    study.set_user_attr(MEMORY_ATTR, units.to_attr())
    study.set_user_attr("family", family)
    study.set_user_attr("site", site)
    queue_units(study, lengths, num_models)
    total = units.total
    import sys

    from dlfm_auto.study._progress import ProgressPoller

    with ProgressPoller(storage, name, total, enabled=sys.stderr.isatty()):
        run_workers(WorkerOptions(storage_url=storage_url, study_name=name), n_jobs, None,
                    storage=storage)
    # the asked seeds only: the study may hold more from an earlier, larger --num-models
    units = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if t.params.get("seed", 0) < num_models and t.params.get("sequence_length") in lengths]
    if len(units) < total:
        raise UserError(f"{total - len(units)} memory units did not finish; run the same "
                        "command again to continue")
    rows = aggregate(units, lengths)
    site_rows = aggregate_sites(units, lengths, ds.site_names) if ds.multi_site else []
    _write(dest, name, family, site, params, lengths, num_models, rows, ds, site_rows)
    return dest


def _best_site_norm(storage_url: str, study_name: str, spec: Any, prep: PrepareConfig,
                    params_source: str) -> PrepareConfig:
    """A study that searched ``site_norm`` (several sites): the curve uses the best trial's
    drawn value with its parameters, as the final report does."""
    if not spec.search_site_norm or params_source not in ("best", study_name):
        return prep
    from dlfm_auto.study._create import load_study
    from dlfm_auto.study._objective import drawn_site_norm
    from dlfm_auto.study._progress import best_trial

    best = best_trial(load_study(storage_url, study_name))
    drawn = None if best is None else drawn_site_norm(spec, best.params)
    return prep if drawn is None else prep.replace(site_norm=drawn)


def bootstrap_ci(per_seed: list[list[float]], n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean and a bootstrap interval over years and seeds.

    ``per_seed[s][y]``: the score of seed s's model in year y. Each replicate draws the years
    with replacement and, for each drawn year, one seed at random, and averages: the interval
    holds the year-to-year (sampling) spread and the seed spread together.
    """
    v = np.asarray(per_seed, dtype=np.float64)  # (seeds, years)
    m = float(np.nanmean(v)) if v.size else float("nan")
    if v.size == 0 or v.shape[1] < 2 and v.shape[0] < 2:
        return m, m, m
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, v.shape[1], size=(n_boot, v.shape[1]))
    ss = rng.integers(0, v.shape[0], size=(n_boot, v.shape[1]))
    stats = np.nanmean(v[ss, ys], axis=1)
    lo, hi = np.nanpercentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return m, float(lo), float(hi)


def aggregate(units: list, lengths: tuple[int, ...]) -> list[dict[str, Any]]:
    """Rows per (L, part): mean and bootstrap intervals of R², anomaly R² and MSE.

    ``cv``: the CV folds of the training years (the curve); ``eval``: the held-out years,
    shown beside it. Scores are means over years (as the study objective) and seeds.
    """
    rows = []
    for L in lengths:
        mine = sorted((t for t in units if t.params.get("sequence_length") == L),
                      key=lambda t: t.params.get("seed"))
        for part, attr in (("cv", "cv_years"), ("eval", "eval_years")):
            recs = [t.user_attrs.get(attr) or [] for t in mine]
            if not any(recs):
                continue
            row: dict[str, Any] = {"sequence_length": L, "split": part}
            for key in ("r2", "anom_r2", "mse"):
                m, lo, hi = bootstrap_ci([[r[key] for r in rr] for rr in recs])
                row.update({f"{key}_mean": m, f"{key}_ci_low": lo, f"{key}_ci_high": hi})
            row.update(n_models=len(mine), n_samples=int(sum(r["n"] for r in recs[0])),
                       years=[r["year"] for r in recs[0]],
                       folds=[r.get("fold", r["year"]) for r in recs[0]])
            rows.append(row)
    return rows


def _write(dest: Path, name: str, family: str, site: str | None, params: dict,
           lengths: tuple[int, ...], num_models: int, rows: list[dict], ds: Any,
           site_rows: list[dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    base = baselines.dataset_baselines(ds)
    fig = go.Figure()
    pfig, axes = plt.subplots(1, 3, figsize=(15, 4))
    styles = (("cv", "#1f77b4", "CV folds (training years)"),
              ("eval", "#7f7f7f", "held-out years (shown, never used to choose)"))
    for part, color, label in styles:
        rr = [r for r in rows if r["split"] == part]
        x = [r["sequence_length"] for r in rr]
        for key, ax in (("r2", axes[0]), ("anom_r2", axes[1]), ("mse", axes[2])):
            m = [r[f"{key}_mean"] for r in rr]
            lo = [r[f"{key}_ci_low"] for r in rr]
            hi = [r[f"{key}_ci_high"] for r in rr]
            ax.plot(x, m, "o-" if part == "cv" else "s--", color=color, label=label)
            ax.fill_between(x, lo, hi, color=color, alpha=0.2)
            ax.set_xlabel("sequence length L (days)")
            ax.set_ylabel({"r2": "R²", "anom_r2": "anomaly R²", "mse": "MSE"}[key])
            if key in ("r2", "anom_r2"):
                fig.add_trace(go.Scatter(
                    x=x, y=m, name=f"{label}: {'R²' if key == 'r2' else 'anomaly R²'}",
                    mode="lines+markers", line={"color": color,
                                                "dash": "solid" if key == "r2" else "dot"},
                    error_y={"type": "data", "symmetric": False, "array": np.subtract(hi, m),
                             "arrayminus": np.subtract(m, lo)}))
    clim = base["cv"].get("climatology", {}).get("cv_r2")
    if clim is not None:
        axes[0].axhline(clim, color="#d62728", ls=":", label="climatology (CV)")
    axes[0].legend(fontsize=7)
    axes[0].set_title("Skill vs L (95% CI: years x seeds)")
    axes[1].set_title("Anomaly skill (observed - climatology)")
    pfig.tight_layout()
    fig.update_layout(title=f"Ecosystem memory: {family} on {site}", xaxis_title="L (days)",
                      yaxis_title="R²", xaxis_type="log")
    cols = ["sequence_length", "split", "r2_mean", "r2_ci_low", "r2_ci_high", "anom_r2_mean",
            "anom_r2_ci_low", "anom_r2_ci_high", "mse_mean", "n_models", "n_samples"]
    cv_days = np.concatenate([sp.val_days for sp in ds.cv_splits()])
    ev_days = ds.days[ds.heldout]
    months = {"cv_validation": days_per_month(cv_days), "heldout": days_per_month(ev_days)}
    metrics = {"study": name, "family": family, "site": site, "params": params,
               "lengths": list(lengths), "num_models": num_models, "matched": True,
               "n_target_days": int(len(ds.y)), "fold_years": list(ds.fold_years[
                   :ds.config.folds]), "eval_years": list(ds.eval_years),
               "baselines": {"cv": base["cv"],
                             "heldout": (base.get("heldout") or {}).get("baselines")},
               "days_per_month": months, "rows": rows}
    folds = metrics["fold_years"]
    if ds.multi_site:  # the memory atlas: one curve per site beside the pooled one
        folds = [label for label, _ in ds.folds()]
        metrics.update(sites=list(ds.site_names), cv_mode=ds.config.cv, folds=folds,
                       site_rows=site_rows or [], site_baselines={
                           b: {k: v["r2"] for k, v in per.items()}
                           for b, per in (base.get("cv_sites") or {}).items()})
    bl = ", ".join(f"{k} {v['cv_r2']:.3f}" for k, v in sorted(base["cv"].items()))
    text = (f"{family} with fixed parameters, {num_models} seeds per length; all lengths use "
            f"the same {len(ds.y)} target days (matched at L={max(lengths)}). The curve is "
            f"measured on the CV folds {', '.join(map(str, folds))} of the "
            f"training years (epochs / rounds chosen on an inner training year); the held-out "
            f"years {', '.join(map(str, ds.eval_years))} are shown beside it and choose "
            f"nothing. Baselines on the same folds (CV R²): {bl}. 95% intervals: bootstrap "
            f"over the scored years and seeds together.")
    atlas: list[str] = []
    html_atlas: list[tuple[str, str]] = []
    figs = [fig]
    if ds.multi_site:
        text += (f" Memory atlas over {len(ds.site_names)} sites ({ds.config.cv} CV): one "
                 "curve per site (below) beside the pooled one.")
        scols = ["site", *cols]
        apfig, afig = atlas_figures(rows, site_rows or [], ds.site_names,
                                    f"Memory atlas: {family}")
        figs.insert(0, afig)
        atlas = ["## Per site", "", ATLAS_NOTE, "", md_table(site_rows or [], scols), "",
                 "![memory atlas](memory_atlas.png)", ""]
        html_atlas = [("Per site", f"<p>{ATLAS_NOTE}</p>" + html_table(site_rows or [], scols))]
    mrows = [{"days": k, **v} for k, v in months.items()]
    mcols = ["days", *months["heldout"]]
    with report_folder(dest) as tmp:
        write_json(tmp / "metrics.json", metrics)
        pfig.savefig(tmp / "memory.png", dpi=110)
        if ds.multi_site:
            apfig.savefig(tmp / "memory_atlas.png", dpi=110)
            plt.close(apfig)
        (tmp / "report.md").write_text("\n".join([
            f"# Memory report: {family} on {site}", "", text, "", md_table(rows, cols), "",
            *atlas, "## Days used per month", "", md_table(mrows, mcols), "",
            "![memory](memory.png)", ""]))
        (tmp / "index.html").write_text(html_page(
            f"Memory report: {family} on {site}",
            [("Summary", f"<p>{text}</p>"), ("Skill by L", html_table(rows, cols)),
             *html_atlas, ("Days used per month", html_table(mrows, mcols))], figs))
    plt.close(pfig)

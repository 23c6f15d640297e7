"""``report memory``: skill vs input sequence length, on matched samples.

Every length uses exactly the target days valid at the longest length (matched mode), so a
change in skill comes from memory, not from a change of samples. Each (L, seed) is one unit of
work stored as a trial of a companion Optuna study (``memory-...``): an interrupted report
continues where it stopped, and ``worker`` processes on other machines can share the units.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from dlfm_auto._errors import UserError
from dlfm_auto.data import PrepareConfig, prepare
from dlfm_auto.models import get_family
from dlfm_auto.reports._common import (
    REPORTS_DIR,
    check_writable,
    html_page,
    html_table,
    md_table,
    mean_ci,
    report_dir,
    report_folder,
    skill,
    write_json,
)
from dlfm_auto.reports._options import check_options
from dlfm_auto.study._spec import check_study_name
from dlfm_auto.study._storage import open_storage
from dlfm_auto.training import predict, train_split

MEMORY_ATTR = "dlfm_auto.memory"
DEFAULT_LENGTHS = (1, 3, 7, 14, 30, 60, 90, 120)


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
    from dlfm_auto.reports._load import load_study

    name = site_study if source == "best" else source
    try:
        study = load_study(storage_url, name)
    except UserError as e:
        raise UserError(f"no study to take {family} parameters from ({e}): pass --params "
                        "k=v,k=v (or a study name), or --study-name STUDY") from None
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise UserError(f"study {name!r} has no complete trial to take parameters from")
    if study.user_attrs.get("family") not in (None, family):
        raise UserError(f"study {name!r} is a {study.user_attrs['family']} study, not {family}")
    best = max(done, key=lambda t: t.value)
    return {k: v for k, v in best.params.items() if k != "sequence_length"}


def _default_params(family: str) -> dict[str, Any]:
    """The first point of the family's DLFM grid: a documented, reproducible default."""
    grid = get_family(family).grid()
    return {k: v[0] for k, v in sorted(grid.items())}


def unit_study_name(family: str, site: str | None, params: dict, prep: PrepareConfig,
                    lengths: tuple[int, ...], max_epochs: int | None) -> str:
    blob = json.dumps({"p": params, "s": prep.settings(), "L": lengths, "e": max_epochs},
                      sort_keys=True, default=str)
    return f"memory-{family}-{site or 'site'}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


class MemoryObjective:
    """One (L, seed) unit: train on the training years, score train and held-out years."""

    def __init__(self, spec: dict[str, Any], device: str | None = None) -> None:
        self.spec = spec
        self.family = get_family(spec["family"])
        self.device = device
        prep = dict(spec["prep"])
        if prep.get("columns") is not None:
            prep["columns"] = tuple(prep["columns"])
        self.prep = PrepareConfig(**prep)

    def __call__(self, trial: optuna.Trial) -> float:
        lengths = self.spec["lengths"]
        L = trial.suggest_categorical("sequence_length", list(lengths))
        seed = trial.suggest_categorical("seed", list(range(self.spec["num_models"])))
        ds = prepare(self.prep.replace(sequence_length=L, match_length=max(lengths)))
        split = ds.eval_split()
        params = self.spec["params"]
        budget = int(params.get("epochs", 100))
        if self.spec.get("max_epochs"):
            budget = min(budget, self.spec["max_epochs"])
        res = train_split(self.family, params, split, max_epochs=budget, patience=10**9,
                          seed=seed, device=self.device, restore_best=False)
        for part, X, y in (("train", split.X_train, split.y_train),
                           ("eval", split.X_val, split.y_val)):
            s = skill(y, predict(self.family, res.model, X))
            trial.set_user_attr(f"{part}_r2", s["r2"])
            trial.set_user_attr(f"{part}_mse", s["mse"])
            trial.set_user_attr(f"{part}_n", s["n"])
        return float(trial.user_attrs["eval_r2"])


def queue_units(study: optuna.Study, lengths: tuple[int, ...], num_models: int) -> int:
    """Queue each (L, seed) with no finished, running or queued trial. Returns units queued."""
    optuna.storages.fail_stale_trials(study)
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    have = set()
    for t in study.get_trials(deepcopy=False, states=live):
        p = t.params or t.system_attrs.get("fixed_params", {})
        have.add((p.get("sequence_length"), p.get("seed")))
    n = 0
    for L in lengths:
        for s in range(num_models):
            if (L, s) not in have:
                study.enqueue_trial({"sequence_length": L, "seed": s})
                n += 1
    return n


def memory_report(storage_url: str, family: str | None, prep: PrepareConfig | None, *,
                  lengths: tuple[int, ...] | None = None, num_models: int = 3,
                  params_source: str = "best", max_epochs: int | None = None,
                  out_root: Path = REPORTS_DIR, device: str | None = None,
                  n_jobs: int = 1, study_name: str | None = None, data: str | None = None
                  ) -> Path:
    """The memory curve of ``family`` on ``prep``'s samples; or, with ``study_name``, on that
    study's data and settings (``data``: a moved copy of its file) with its best parameters
    (``params_source="best"``), written to ``<out>/<study>/memory/``."""
    from dlfm_auto.study._runner import WorkerOptions, run_workers

    lengths = DEFAULT_LENGTHS if lengths is None else tuple(lengths)
    check_options(sequence_lengths=lengths, num_models=num_models, max_epochs=max_epochs,
                  n_jobs=n_jobs)
    check_writable(Path(out_root))  # before the work (the folder itself once its name is known)
    if study_name is not None:
        from dlfm_auto.reports._load import check_data_file, load_study
        from dlfm_auto.study._runner import load_spec

        report_dir(out_root, study_name, "memory")
        source = load_spec(load_study(storage_url, study_name))
        if family is not None and family != source.family:
            raise UserError(f"study {study_name!r} is a {source.family} study, not {family}")
        family = source.family
        prep = check_data_file(source, data).prep
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
    site = ds.source.site
    site_study = f"{family}-{site or ds.source.name.split('.')[0]}"
    params = resolve_params(params_source, family, storage_url, site_study)
    if not fam.sequence and "feed" in params and params["feed"] == "today":
        params["feed"] = "flatten"  # a memory curve needs the window
    name = unit_study_name(family, site, params, prep, lengths, max_epochs)
    check_study_name(name)  # a unit study is created below
    dest = report_dir(out_root, study_name or name, "memory")  # before the study is created
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                load_if_exists=True)
    spec = {"kind": "memory", "family": family, "params": params, "lengths": list(lengths),
            "num_models": num_models, "max_epochs": max_epochs,
            "prep": {"data": prep.data, **prep.settings()}, "data_sha256": ds.source.sha256}
    study.set_user_attr(MEMORY_ATTR, json.loads(json.dumps(spec, default=str)))
    study.set_user_attr("family", family)
    study.set_user_attr("site", site)
    queue_units(study, lengths, num_models)
    total = len(lengths) * num_models
    import sys

    from dlfm_auto.study._runner import ProgressPoller

    with ProgressPoller(storage_url, name, total, enabled=sys.stderr.isatty()):
        run_workers(WorkerOptions(storage_url=storage_url, study_name=name, device=device),
                    n_jobs, None)
    units = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(units) < total:
        raise UserError(f"{total - len(units)} memory units did not finish; run the same "
                        "command again to continue")
    rows = aggregate(units, lengths)
    _write(dest, name, family, site, params, lengths, num_models, rows, ds)
    return dest


def aggregate(units: list, lengths: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for L in lengths:
        mine = [t for t in units if t.params.get("sequence_length") == L]
        for part in ("train", "eval"):
            r2 = [t.user_attrs[f"{part}_r2"] for t in mine]
            mse = [t.user_attrs[f"{part}_mse"] for t in mine]
            m, lo, hi = mean_ci(r2)
            mm, mlo, mhi = mean_ci(mse)
            rows.append({"sequence_length": L, "split": part, "r2_mean": m, "r2_ci_low": lo,
                         "r2_ci_high": hi, "mse_mean": mm, "mse_ci_low": mlo,
                         "mse_ci_high": mhi, "n_models": len(mine),
                         "n_samples": int(mine[0].user_attrs[f"{part}_n"]) if mine else 0})
    return rows


def _write(dest: Path, name: str, family: str, site: str | None, params: dict,
           lengths: tuple[int, ...], num_models: int, rows: list[dict], ds: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    fig = go.Figure()
    pfig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for part, color in (("train", "#ff7f0e"), ("eval", "#1f77b4")):
        rr = [r for r in rows if r["split"] == part]
        x = [r["sequence_length"] for r in rr]
        for key, ax in (("r2", axes[0]), ("mse", axes[1])):
            m = [r[f"{key}_mean"] for r in rr]
            lo = [r[f"{key}_ci_low"] for r in rr]
            hi = [r[f"{key}_ci_high"] for r in rr]
            ax.plot(x, m, "o-", color=color, label=part)
            ax.fill_between(x, lo, hi, color=color, alpha=0.25)
            ax.set_xlabel("sequence length L (days)")
            ax.set_ylabel("R²" if key == "r2" else "MSE")
            if key == "r2":
                fig.add_trace(go.Scatter(x=x, y=m, name=f"{part} R²", mode="lines+markers",
                                         line={"color": color},
                                         error_y={"type": "data", "symmetric": False,
                                                  "array": np.subtract(hi, m),
                                                  "arrayminus": np.subtract(m, lo)}))
    axes[0].legend()
    axes[0].set_title("Skill vs input sequence length (95% CI)")
    pfig.tight_layout()
    fig.update_layout(title=f"Ecosystem memory: {family} on {site}", xaxis_title="L (days)",
                      yaxis_title="R²", xaxis_type="log")
    cols = ["sequence_length", "split", "r2_mean", "r2_ci_low", "r2_ci_high", "mse_mean",
            "n_models", "n_samples"]
    metrics = {"study": name, "family": family, "site": site, "params": params,
               "lengths": list(lengths), "num_models": num_models, "matched": True,
               "n_target_days": int(len(ds.y)), "eval_years": list(ds.eval_years), "rows": rows}
    text = (f"{family} with fixed parameters, {num_models} seeds per length; all lengths use "
            f"the same {len(ds.y)} target days (matched at L={max(lengths)}); models train "
            f"on the training years and are scored on them and on the held-out years "
            f"{', '.join(map(str, ds.eval_years))}.")
    with report_folder(dest) as tmp:
        write_json(tmp / "metrics.json", metrics)
        pfig.savefig(tmp / "memory.png", dpi=110)
        (tmp / "report.md").write_text("\n".join([
            f"# Memory report: {family} on {site}", "", text, "", md_table(rows, cols), "",
            "![memory](memory.png)", ""]))
        (tmp / "index.html").write_text(html_page(
            f"Memory report: {family} on {site}",
            [("Summary", f"<p>{text}</p>"), ("Skill by L", html_table(rows, cols))], [fig]))
    plt.close(pfig)

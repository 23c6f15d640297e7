"""``report leaderboard``: every study of a storage (or of one site) side by side.

One row per search study: family, trials, best CV R² ± sd over its folds, skill vs
climatology and anomaly R² (on the same folds, :func:`~dlfm_auto.study._objective.
skill_summary`), the held-out R² of its final report when one exists (read from
``<out>/<study>/final/metrics.json``; the row says which trial it retrained), and its compute
time (the sum of its trials' durations, all workers together). The baselines are rows too:
the climatology and linear regression (persistence with ``--lag-nee``) on the same folds and
held-out years. Studies of one site may differ in their days (matched window lengths, other
settings): each set of baselines that differs at the precision shown (4 decimals) is one
group of rows naming the studies it serves.

Memory-report studies (their (L, seed) units of work) are not search studies and are left
out. The report only reads studies; its figure is also attached to each study listed for
optuna-dashboard (overwritten on the next run, one figure per study).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dlfm_auto._errors import UserError
from dlfm_auto._urls import StorageURL
from dlfm_auto.reports._common import (
    REPORTS_DIR,
    html_page,
    html_table,
    md_table,
    report_dir,
    report_folder,
    write_json,
)

BOARD = "leaderboard"
GRAPH_ID = "dlfm-auto-leaderboard"
COLUMNS = ["study", "family", "site", "trials", "cv_r2", "cv_r2_sd", "skill_vs_climatology",
           "anomaly_r2", "heldout_r2", "compute_s"]


def board_name(site: str | None) -> str:
    """``leaderboard`` or ``leaderboard-SITE``: the folder under ``--out``."""
    return f"{BOARD}-{site}" if site else BOARD


def site_of(user_attrs: dict[str, Any]) -> str:
    """A study's site: the file's ``# Site:`` line, else the data file name (as study names);
    a multi-site study's sites joined by "+" (its CV R² is over all of them, not one's)."""
    from dlfm_auto.study._spec import SPEC_ATTR

    sites = (user_attrs.get(SPEC_ATTR) or {}).get("sites")
    if sites:
        return "+".join(sites)
    return str(user_attrs.get("site") or str(user_attrs.get("data_file", "?")).split(".")[0])


def collect(storage_url: str | StorageURL, site: str | None = None, reports_root: Path = REPORTS_DIR
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any], list[str]]:
    """(study rows, baseline rows, studies, notes) of the storage (or of ``site``)."""
    import optuna

    from dlfm_auto._urls import display_url
    from dlfm_auto.study._memory_units import MEMORY_ATTR
    from dlfm_auto.study._spec import SPEC_ATTR
    from dlfm_auto.study._storage import open_storage

    storage = open_storage(storage_url, heartbeat=False, must_exist=True)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage,
                                                                  include_best_trial=False)]
    rows, studies, notes = [], [], []
    groups: dict[str, dict[str, Any]] = {}
    sites_seen: set[str] = set()
    for name in sorted(names):
        study = optuna.load_study(study_name=name, storage=storage)
        ua = study.user_attrs
        if MEMORY_ATTR in ua:
            continue  # a memory report's units of work, not a search study
        if SPEC_ATTR not in ua:
            notes.append(f"{name}: not created by dlfm_auto, left out")
            continue
        sites_seen.add(site_of(ua))
        if site is not None and site_of(ua) != site:
            continue
        row, base = _study_row(study, reports_root)
        rows.append(row)
        studies.append(study)
        if base is not None:
            # one group per set of baselines that differs at the precision shown (4 decimals)
            key = json.dumps(_rounded(base), sort_keys=True)
            groups.setdefault(key, {"base": base, "studies": []})["studies"].append(name)
        elif row.get("note"):
            notes.append(f"{name}: {row['note']}")
    if site is not None and not rows:
        raise UserError(f"no study of site {site!r} in {display_url(storage_url)}"
                        + (f" (sites: {', '.join(sorted(sites_seen))})" if sites_seen else ""))
    rows.sort(key=lambda r: -np.inf if r["cv_r2"] is None else -r["cv_r2"])
    return rows, _baseline_rows(groups), studies, notes


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    return obj


def _study_row(study: Any, reports_root: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from optuna.trial import TrialState

    from dlfm_auto.study._create import load_spec
    from dlfm_auto.study._objective import skill_summary

    ua = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    row: dict[str, Any] = {
        "study": study.study_name, "kind": "study", "family": ua.get("family"),
        "site": site_of(ua), "trials": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "cv_r2": None, "cv_r2_sd": None, "skill_vs_climatology": None, "anomaly_r2": None,
        "heldout_r2": None, "heldout_trial": None, "best_trial": None,
        "compute_s": float(sum(t.duration.total_seconds() for t in trials if t.duration)),
    }
    if not complete:
        row["note"] = "no complete trial yet"
        return row, None
    best = max(complete, key=lambda t: t.value)
    row.update(cv_r2=float(best.value), cv_r2_sd=best.user_attrs.get("cv_r2_sd"),
               best_trial=best.number, sequence_length=best.user_attrs.get("sequence_length"))
    row.update(_heldout(reports_root, study.study_name))
    try:
        sk = skill_summary(load_spec(study), best)
    except (UserError, OSError) as e:  # e.g. the data file moved: the row without skill
        row["note"] = f"no baselines ({e})"
        return row, None
    row.update(skill_vs_climatology=sk["skill_vs_climatology"], anomaly_r2=sk["anomaly_r2"])
    base = {n: {"cv_r2": v.get("cv_r2"),
                "heldout_r2": ((sk.get("heldout_baselines") or {}).get(n) or {}).get("r2")}
            for n, v in sorted(sk["baselines"].items())}
    return row, base


def _heldout(reports_root: Path, study_name: str) -> dict[str, Any]:
    """Held-out R² of the ensemble in the study's final report, and the trial it retrained."""
    path = Path(reports_root) / study_name / "final" / "metrics.json"
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    ens = [r for r in m.get("rows", []) if r.get("model") == "ensemble mean"
           and r.get("split") == "eval"]
    return {"heldout_r2": ens[0].get("r2") if ens else None,
            "heldout_trial": m.get("best_trial")}


def _baseline_rows(groups: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, g in enumerate(groups.values()):
        tag = "" if len(groups) == 1 else f" [{i + 1}]"
        for name, sc in g["base"].items():
            rows.append({"study": f"baseline: {name}{tag}", "kind": "baseline",
                         "family": name, "site": "", "cv_r2": sc["cv_r2"],
                         "heldout_r2": sc["heldout_r2"], "same_folds_as": g["studies"]})
    return rows


def leaderboard_report(storage_url: str | StorageURL, *, site: str | None = None,
                       out_root: Path = REPORTS_DIR) -> Path:
    """Write ``<out>/leaderboard[-SITE]/`` (index.html, report.md, metrics.json, PNG)."""
    from dlfm_auto._urls import display_url

    if site is not None:
        from dlfm_auto.study._spec import STUDY_NAME_RULE, check_study_name

        try:
            check_study_name(board_name(site))
        except UserError:
            raise UserError(f"invalid site {site!r}: a site names a folder, "
                            f"{STUDY_NAME_RULE}") from None
    dest = report_dir(out_root, board_name(site), None)  # safe and writable, before the work
    rows, base_rows, studies, notes = collect(storage_url, site, Path(out_root))
    if not rows:
        raise UserError(f"no dlfm_auto study in {display_url(storage_url)}: run `run-study` first")
    title = f"Leaderboard: {site}" if site else "Leaderboard: every study"
    fig = _figure(rows, base_rows, title)
    shown = [_shown(r) for r in rows]
    bcols = ["study", "cv_r2", "heldout_r2", "same folds as"]
    bshown = [{**r, "same folds as": ", ".join(r["same_folds_as"])} for r in base_rows]
    summary = (f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'} in {display_url(storage_url)}"
               + (f" of site {site}" if site else "")
               + f"; total compute {sum(r['compute_s'] for r in rows) / 60:.1f} min. CV R² is "
               "the best trial's mean over its leave-one-year-out folds (± sd over folds); "
               "skill vs climatology = 1 - MSE/MSE_climatology and anomaly R² = R² on observed "
               "minus climatology, both on the same folds; held-out R² is the final report's "
               "ensemble on the held-out years (blank: no final report yet).")
    # one list: the studies (kind "study", best first), then the baselines (kind "baseline")
    metrics = {"storage": display_url(storage_url), "site": site, "rows": rows + base_rows,
               "notes": notes}
    with report_folder(dest) as tmp:
        write_json(tmp / "metrics.json", metrics)
        _write_png(tmp / "leaderboard.png", rows, base_rows, title)
        md = [f"# {title}", "", summary, "", md_table(shown, COLUMNS), "",
              "## Baselines (same folds and held-out years)", "", md_table(bshown, bcols), "",
              *(["## Notes", "", *[f"- {n}" for n in notes], ""] if notes else []),
              "![leaderboard](leaderboard.png)", ""]
        (tmp / "report.md").write_text("\n".join(md))
        notes_html = "".join(f"<li>{n}</li>" for n in notes)
        (tmp / "index.html").write_text(html_page(title, [
            ("Summary", f"<p>{summary}</p>"), ("Studies", html_table(shown, COLUMNS)),
            ("Baselines (same folds and held-out years)", html_table(bshown, bcols)),
            *([("Notes", f"<ul>{notes_html}</ul>")] if notes else [])], [fig]))
    _attach(studies, fig)
    return dest


def _shown(r: dict[str, Any]) -> dict[str, Any]:
    """A row for the tables: blanks for n/a, compute time in seconds as an integer."""
    out = {k: ("" if v is None else v) for k, v in r.items()}
    out["compute_s"] = int(round(r["compute_s"]))
    if r["heldout_r2"] is not None and r.get("heldout_trial") not in (None, r.get("best_trial")):
        out["heldout_r2"] = f"{r['heldout_r2']:.4f} (trial #{r['heldout_trial']})"
    return out


def _figure(rows: list[dict[str, Any]], base_rows: list[dict[str, Any]], title: str) -> Any:
    import plotly.graph_objects as go

    ok = [r for r in rows if r["cv_r2"] is not None]
    labels = [r["study"] for r in ok]
    fig = go.Figure([
        go.Bar(x=[r["cv_r2"] for r in ok], y=labels, orientation="h", name="best CV R²",
               error_x={"type": "data", "array": [r["cv_r2_sd"] or 0.0 for r in ok]}),
        go.Scatter(x=[r["heldout_r2"] for r in ok], y=labels, mode="markers",
                   name="held-out R² (final report)",
                   marker={"symbol": "diamond", "size": 10, "color": "black"}),
    ])
    labelled: set[str] = set()
    for b in base_rows:
        if b["cv_r2"] is not None:
            name = b["family"]
            fig.add_vline(x=b["cv_r2"], line_dash="dash" if name == "climatology" else "dot",
                          line_color="gray", annotation_position="top",
                          annotation_text=None if name in labelled else f"{name} baseline")
            labelled.add(name)
    values = [r["cv_r2"] - (r["cv_r2_sd"] or 0.0) for r in ok] + [
        r["heldout_r2"] for r in ok if r["heldout_r2"] is not None] + [
        b["cv_r2"] for b in base_rows if b["cv_r2"] is not None]
    fig.update_layout(title=title, xaxis_title="R²",
                      xaxis_range=[max(-1.0, min(values) - 0.05), 1.0],
                      yaxis={"autorange": "reversed"}, height=200 + 40 * len(ok))
    return fig


def _write_png(path: Path, rows: list[dict[str, Any]], base_rows: list[dict[str, Any]],
               title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["cv_r2"] is not None]
    y = np.arange(len(ok))
    fig, ax = plt.subplots(figsize=(11, 1.8 + 0.45 * max(1, len(ok))))
    ax.barh(y, [r["cv_r2"] for r in ok], xerr=[r["cv_r2_sd"] or 0.0 for r in ok],
            color="#1f77b4", alpha=0.8, label="best CV R² (± sd over folds)")
    held = [(i, r["heldout_r2"]) for i, r in enumerate(ok) if r["heldout_r2"] is not None]
    if held:
        ax.plot([h for _, h in held], [i for i, _ in held], "kD", ms=6,
                label="held-out R² (final report)")
    styles = {"climatology": "--", "linear": ":", "persistence": "-."}
    labelled: set[str] = set()
    for b in base_rows:  # one style per baseline; several groups draw close lines
        if b["cv_r2"] is not None:
            name = b["family"]
            ax.axvline(b["cv_r2"], color="gray", ls=styles.get(name, "--"), lw=1.2,
                       label=None if name in labelled else f"{name} baseline (CV R²)")
            labelled.add(name)
    ax.set_yticks(y, [f"{r['study']}  ({r['trials']} trials)" for r in ok])
    ax.invert_yaxis()
    values = [r["cv_r2"] - (r["cv_r2_sd"] or 0.0) for r in ok] + [h for _, h in held] + [
        b["cv_r2"] for b in base_rows if b["cv_r2"] is not None]
    ax.set_xlim(max(-1.0, min(values) - 0.05), 1.0)  # zoomed: the differences are small
    ax.set_xlabel("R²")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _attach(studies: list[Any], fig: Any) -> None:
    """The leaderboard figure on each study's dashboard page (one, replaced each run)."""
    try:
        from optuna_dashboard import save_plotly_graph_object

        for study in studies:
            save_plotly_graph_object(study, fig, graph_object_id=GRAPH_ID)
    except Exception as e:  # the report itself is written; the dashboard is a bonus
        import warnings

        warnings.warn(f"could not attach the leaderboard to the dashboard: {e}", stacklevel=2)

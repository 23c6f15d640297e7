"""The study's note on its optuna-dashboard page: its settings first, then its latest results.

A study holds one note (the dashboard shows the newest version). It is written when the
study is created (settings only), after every ``run-study`` (settings, then the skill summary
beside the baselines) and by the final report (settings, then its summary), so a reader always
sees how the study was defined above what it achieved.
"""

from __future__ import annotations

from typing import Any

from dlfm_auto.study._spec import StudySpec

#: The objective's name on the dashboard (``study.set_metric_names``).
METRIC_NAME = "CV R²"


def settings_note(spec: StudySpec) -> str:
    """Markdown: the study's family, data, target, drivers, search and data settings."""
    prep = spec.prep.settings()
    search = {"sampler": spec.sampler, "pruner": spec.pruner, "n_trials": spec.n_trials,
              "max_epochs": spec.max_epochs, "seed": spec.seed, "patience": spec.patience,
              "sequence_length": prep.get("sequence_length") if spec.fixed_length
              else "searched"}
    lines = [
        "## Study settings", "",
        f"- family: **{spec.family}**",
        (f"- data: {len(spec.sites)} sites ({', '.join(spec.sites)}), files `{spec.data_name}` "
         f"(sha256 of all {spec.data_sha256[:12]}...)" if spec.sites else
         f"- data: `{spec.data_name}` (site {spec.site or '?'}, sha256 {spec.data_sha256[:12]}...)"),
        f"- target: {spec.target}; drivers: {', '.join(spec.inputs)}",
        "- search: " + ", ".join(f"{k}={v}" for k, v in search.items()),
        "- data settings: " + ", ".join(f"{k}={v}" for k, v in sorted(prep.items())
                                        if k not in ("target", "columns", "sequence_length")),
        f"- objective: {METRIC_NAME}, {objective_words(spec)}",
    ]
    return "\n".join(lines) + "\n"


def objective_words(spec: StudySpec) -> str:
    """What a trial's value is, in words (notes and summaries)."""
    folds = ("leave-one-site-out folds" if spec.prep.cv == "sites" and spec.sites else
             "season-year folds pooled over sites" if spec.sites else
             "leave-one-season-year-out folds")
    return {"mean": f"the mean R² over {folds}", "median": f"the median R² over {folds}",
            "pooled": f"the R² of all {folds}' predictions pooled"}[spec.cv_score]


def save_study_note(study: Any, spec: StudySpec, *sections: str) -> None:
    """Replace the study's note with its settings followed by ``sections`` (Markdown)."""
    try:
        from optuna_dashboard import save_note

        save_note(study, "\n".join([settings_note(spec), *sections]))
    except Exception:  # the dashboard is a bonus: never fail a run or a report for it
        pass

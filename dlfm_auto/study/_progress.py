"""How far a study is: counts, the live progress bar, the summary of its best trial."""

from __future__ import annotations

import threading
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dlfm_auto._errors import UserError
from dlfm_auto._urls import StorageURL
from dlfm_auto.study._create import load_spec
from dlfm_auto.study._objective import FINISHED
from dlfm_auto.study._storage import as_storage


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the highest CV R² (None before the first one)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def waiting_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


class ProgressPoller:
    """Polls the storage in a thread and drives a rich progress bar (any number of workers)."""

    def __init__(self, storage: str | StorageURL | optuna.storages.BaseStorage, study_name: str,
                 total: int, enabled: bool = True):
        self.storage, self.name, self.total, self.enabled = storage, study_name, total, enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressPoller:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        study = optuna.load_study(study_name=self.name,
                                  storage=as_storage(self.storage, heartbeat=False))
        start_done = finished_count(study)
        cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[best]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn())
        with Progress(*cols, transient=False) as bar:
            task = bar.add_task(self.name, total=self.total, completed=start_done, best="")
            while True:
                stopping = self._stop.wait(1.0)
                trials = study.get_trials(deepcopy=False)
                done = [t for t in trials if t.state in FINISHED]
                best = [t.value for t in trials if t.state == TrialState.COMPLETE]
                text = f"best R² {max(best):.4f}" if best else "best R² -"
                running = sum(t.state == TrialState.RUNNING for t in trials)
                bar.update(task, completed=len(done), best=f"{text}  running {running}")
                if stopping:
                    break


def study_summary(study: optuna.Study, skill: bool = False) -> dict[str, Any]:
    """Counts, best trial and its CV R² ± sd, for the end-of-run table and `best`.

    ``skill``: add the baselines on the same folds, skill vs climatology and anomaly R² of the
    best trial (:func:`~dlfm_auto.study._objective.skill_summary`; reads the study's data
    file, so ``studies`` leaves it out). Works on studies older than these attributes.
    """
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    out: dict[str, Any] = {"study": study.study_name, "counts": counts,
                           "user_attrs": dict(study.user_attrs)}
    best = best_trial(study)
    if best is not None:
        out["best"] = {
            "number": best.number, "value": best.value, "params": best.params,
            "cv_r2_sd": best.user_attrs.get("cv_r2_sd"),
            "fold_r2": best.user_attrs.get("fold_r2"),
            "fold_val_years": best.user_attrs.get("fold_val_years"),
            "cv_mse": best.user_attrs.get("cv_mse"),
            "sequence_length": best.user_attrs.get("sequence_length"),
            "best_epochs": best.user_attrs.get("best_epochs"),
            "duration_s": best.duration.total_seconds() if best.duration else None,
        }
        if best.user_attrs.get("site_r2") is not None:  # several sites
            out["best"].update({k: best.user_attrs.get(k) for k in (
                "fold_labels", "site_r2", "median_site_r2", "pooled_r2", "site_n")})
        if skill:
            out["best"].update(_skill(study, best))
    times = [t.datetime_complete for t in trials if t.datetime_complete]
    out["last_update"] = max(times).isoformat(timespec="seconds") if times else None
    return out


def _skill(study: optuna.Study, best: FrozenTrial) -> dict[str, Any]:
    from dlfm_auto.study._objective import skill_summary

    try:
        return skill_summary(load_spec(study), best)
    except (UserError, OSError) as e:  # e.g. the data file moved: skill without baselines
        return {"baselines": None, "skill_vs_climatology": None, "anomaly_r2": None,
                "baselines_error": str(e)}

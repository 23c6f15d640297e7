"""Loading what a report needs from a study, with clear errors for stale inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from dlfm_auto._errors import UserError
from dlfm_auto.study._create import load_spec, load_study
from dlfm_auto.study._objective import model_params, trial_length
from dlfm_auto.study._progress import best_trial
from dlfm_auto.study._spec import StudySpec


@dataclass
class StudyContext:
    study: optuna.Study
    spec: StudySpec
    best: FrozenTrial
    params: dict[str, Any]  # model params of the best trial (no sequence_length)
    sequence_length: int

    @property
    def prep(self) -> Any:
        """The best trial's data settings: the same target days as its CV (matched mode)."""
        from dlfm_auto.study._objective import trial_data

        return trial_data(self.spec, self.best)


def check_data_file(spec: StudySpec, data_override: str | tuple[str, ...] | None = None
                    ) -> StudySpec:
    """The study's data files must still exist and be the same files (by hash)."""
    from dlfm_auto.study._create import check_data

    return check_data(spec, data_override)


def study_context(storage_url: str, name: str, data_override: str | None = None
                  ) -> StudyContext:
    study = load_study(storage_url, name)
    spec = check_data_file(load_spec(study), data_override)
    best = best_trial(study)
    if best is None:
        raise UserError(f"study {name!r} has no complete trial yet: run `run-study` first")
    return StudyContext(study, spec, best, model_params(spec, best.params),
                        trial_length(spec, best))


def require_eval_years(ctx: StudyContext) -> StudyContext:
    """Reports that score held-out years refuse, before any work, a study that has none."""
    if ctx.spec.prep.eval_years < 1:
        raise UserError(f"study {ctx.study.study_name!r} has no held-out years (eval_years="
                        f"{ctx.spec.prep.eval_years}): this report scores the held-out years; "
                        "run a study with --eval-years 1 or more")
    return ctx

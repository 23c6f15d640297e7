"""The part of a family's search space that the study's data can fill.

On a short record (three season years: one held out, two folds) long windows leave a fold with
too few training windows for two batches, or drop a fold altogether. Rather than let TPE draw
such settings trial after trial, the searched ``sequence_length`` and ``batch_size`` choices are
cut to those every fold can fill (said once by ``run-study``); a study that no setting can fit is
refused up front. What is left infeasible for a trial (a rare corner) is recorded on that trial
as infeasible, and the study goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlfm_auto._errors import UserError
from dlfm_auto.data import prepare
from dlfm_auto.models import get_family
from dlfm_auto.study._spec import StudySpec

BATCH_SIZES = (32, 64, 128)  # the torch families' searched batch sizes (models/_base.py)


@dataclass(frozen=True)
class Space:
    """Choices kept per categorical parameter, and the match length they share."""

    choices: dict[str, list[Any]] = field(default_factory=dict)
    match_length: int | None = None
    note: str | None = None  # what was cut, for run-study to say once


def _min_counts(spec: StudySpec, length: int, match: int | None) -> tuple[int, int, int]:
    """(folds, smallest training count, smallest validation count) at this length."""
    ds = prepare(spec.prep.replace(sequence_length=length, match_length=match))
    folds = ds.folds()
    if not folds:
        return 0, 0, 0
    train = ~ds.heldout
    n_train = min(int(np.sum(train & ~val)) for _, val in folds)
    n_val = min(int(np.sum(val)) for _, val in folds)
    return len(folds), n_train, n_val


def feasible_space(spec: StudySpec) -> Space:
    """The searched choices every fold can fill; UserError when no setting fits at all."""
    fam = get_family(spec.family)
    searched = not spec.fixed_length and bool(fam.sequence_lengths) and spec.sampler != "grid"
    lengths = list(fam.sequence_lengths) if searched else [spec.prep.sequence_length]
    torch = fam.kind == "torch"
    batches = ([min(spec_batches(spec))] if spec.sampler == "grid" else list(BATCH_SIZES)) \
        if torch else [1]
    why = ""
    for k in range(len(lengths), 0, -1):
        kept = lengths[:k]
        match = max(max(kept), spec.prep.match_length or 0) if searched else spec.prep.match_length
        try:
            n_folds, n_train, n_val = _min_counts(spec, kept[0], match)
        except UserError as e:
            why = str(e)
            continue
        if n_folds == 0 or n_val == 0:
            why = f"no fold has validation samples at sequence_length={max(kept)}"
            continue
        ok = [b for b in batches if n_train >= 2 * b]
        if not ok:
            why = (f"{n_train} training windows of {max(kept)} days in the smallest fold, "
                   f"fewer than two batches of {min(batches)}")
            continue
        choices: dict[str, list[Any]] = {}
        cut = []
        if searched and kept != lengths:
            choices["sequence_length"] = kept
            cut.append(f"sequence_length {', '.join(map(str, kept))} (of "
                       f"{', '.join(map(str, lengths))})")
        if torch and spec.sampler != "grid" and ok != batches:
            choices["batch_size"] = ok
            cut.append(f"batch_size {', '.join(map(str, ok))} (of "
                       f"{', '.join(map(str, batches))})")
        note = (f"search space cut to what these data support ({n_train} training windows in "
                f"the smallest fold): " + "; ".join(cut)) if cut else None
        return Space(choices, match if searched else None, note)
    raise UserError(f"{spec.family}: no setting of the search space fits these data ({why}); "
                    "use a site with more years, fewer --folds, or --eval-years 1")


def spec_batches(spec: StudySpec) -> list[int]:
    """Batch sizes of the family's grid (grid studies run only those)."""
    return [int(b) for b in get_family(spec.family).grid().get("batch_size", [64])]


class Restricted:
    """A trial whose categorical draws keep to the choices of a :class:`Space`."""

    def __init__(self, trial: Any, choices: dict[str, list[Any]]) -> None:
        self._trial, self._choices = trial, choices

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        if name in self._choices:
            choices = [c for c in choices if c in self._choices[name]] or list(choices)
        return self._trial.suggest_categorical(name, choices)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)

"""The worker loop: what every worker runs, local or remote.

``work`` runs ``study.optimize(n_trials=1)`` in a loop (heartbeats only run inside
``optimize``) until the study holds its total of finished trials. What a trial does is decided
once, before the loop (:func:`_plan`): a search trial, or a memory unit.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from dlfm_auto._errors import UserError
from dlfm_auto._urls import StorageURL, mask_secrets
from dlfm_auto.data import prepare
from dlfm_auto.study._create import check_data, load_spec, load_study, make_pruner, make_sampler
from dlfm_auto.study._memory_units import MemoryObjective, load_units
from dlfm_auto.study._objective import FINISHED, Objective
from dlfm_auto.study._progress import finished_count, waiting_count
from dlfm_auto.study._space import feasible_space
from dlfm_auto.study._storage import (
    TotalReached,
    fail_dead_local_trials,
    guarded,
    heartbeat_settings,
    open_storage,
)

MAX_FAILS_IN_A_ROW = 3  # a worker whose first trials all fail stops (a code or data error)
TRACEBACK_CHARS = 8000
SLOT_ATTR = "dlfm_auto.worker_slots"

@dataclass
class WorkerOptions:
    storage_url: str | StorageURL
    study_name: str
    worker: int | None = None  # sampler stream; None: a fresh slot from the study
    threads: int = 1
    data_override: str | None = None
    max_trials: int | None = None  # this worker's own cap
    deadline: float | None = None  # time.time() after which no trial starts
    report_errors: bool = False  # print the first failed trial's error (one line) on stderr


class WorkResult(int):
    """Trials this worker ran (an ``int``, for callers that only count), with the breakdown."""

    complete: int
    pruned: int
    failed: int
    infeasible: int
    first_error: str | None

    @classmethod
    def of(cls, ran: int, complete: int, pruned: int, failed: int, infeasible: int,
           first_error: str | None) -> WorkResult:
        r = cls(ran)
        r.complete, r.pruned, r.failed, r.infeasible = complete, pruned, failed, infeasible
        r.first_error = first_error
        return r


def worker_slot(study: optuna.Study) -> int:
    """A number no other worker process of this study got: its sampler's random stream.

    Two ``run-study`` processes (or workers) on one study would otherwise seed their samplers
    alike and run identical trials. Counted in the study's system attributes, under the lock.
    """
    g = guarded(study._storage)
    with g.exclusive() if g is not None else contextlib.nullcontext():
        attrs = study._storage.get_study_system_attrs(study._study_id)
        slot = int(attrs.get(SLOT_ATTR, 0))
        study._storage.set_study_system_attr(study._study_id, SLOT_ATTR, slot + 1)
    return slot


def _guard(objective: Callable) -> Callable:
    """The objective, with failures recorded on the trial (one line + full traceback).

    A :class:`UserError` inside a trial means its sampled setting cannot run on these data
    (e.g. windows the fold cannot fill): the trial is pruned with that reason (``infeasible``)
    and the study goes on; TPE then learns to avoid the region. Any other exception is a failed
    trial: its message (``error``) and traceback (``traceback``) are the trial's user attrs.
    """
    def run(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except UserError as e:
            trial.set_user_attr("infeasible", str(e))
            raise optuna.TrialPruned(f"infeasible: {e}") from None
        except Exception as e:
            trial.set_user_attr("error", _one_line(e))
            trial.set_user_attr("traceback", traceback.format_exc()[-TRACEBACK_CHARS:])
            raise

    return run


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or "(no message)"
    return mask_secrets(f"{type(e).__name__}: {text}")[:300]


def failure_line(t: FrozenTrial) -> str:
    """One line for a failed or infeasible trial, saying where the full traceback is."""
    if "infeasible" in t.user_attrs:
        return f"trial {t.number} infeasible (pruned): {t.user_attrs['infeasible']}"
    where = (" (full traceback: user attribute 'traceback' of that trial, e.g. in "
             "optuna-dashboard)" if "traceback" in t.user_attrs else "")
    return f"trial {t.number} failed: {t.user_attrs.get('error', 'no error recorded')}{where}"


@dataclass
class _Plan:
    """What this worker's trials are, decided once before the loop."""

    objective: Callable[[optuna.Trial], float]
    total: float  # finished trials the study wants (inf: no total, the worker decides)
    queued_only: bool  # run only queued trials (grid points, memory units), never sample
    catch: tuple[type[Exception], ...]  # errors that fail one trial, not the worker


def _plan(study: optuna.Study, opts: WorkerOptions, on_best: Callable | None) -> _Plan:
    """The study says what its trials are: the (L, seed) units of a memory report, or a search
    (the spec's objective, sampler and pruner)."""
    units = load_units(study)
    if units is not None:
        if opts.data_override:
            units = units.with_data(opts.data_override)
        # a report unit's error stops the report
        return _Plan(MemoryObjective(units), units.total, queued_only=True, catch=())
    spec = check_data(load_spec(study), opts.data_override)
    search = Objective(spec)
    search.space = feasible_space(spec)
    n_folds = prepare(spec.prep).n_folds
    worker = opts.worker if opts.worker is not None else worker_slot(study)
    study.sampler = make_sampler(spec, worker)
    study.pruner = make_pruner(spec, search.stride, n_folds)
    search.on_best = on_best
    total: float = spec.n_trials
    if total == 0:  # created with --n-trials 0: no study-wide total, the worker decides
        if opts.max_trials is None and opts.deadline is None:
            raise UserError(f"study {opts.study_name!r} has no total number of trials; "
                            "pass --n-trials N or --timeout S to the worker")
        total = float("inf")
    # a failed trial is recorded and shown; the study goes on
    return _Plan(_guard(search), total, queued_only=spec.sampler == "grid", catch=(Exception,))


class _Tally:
    """Counts this worker's trials by outcome (an Optuna callback); says the first failure."""

    def __init__(self, report_errors: bool) -> None:
        self.counts = {s: 0 for s in ("complete", "pruned", "failed", "infeasible")}
        self.first_error: str | None = None
        self.fails_in_a_row = 0
        self.report_errors = report_errors

    def __call__(self, _: optuna.Study, t: FrozenTrial) -> None:
        c = self.counts
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["infeasible" if "infeasible" in t.user_attrs else "pruned"] += 1
        elif t.state == TrialState.FAIL:
            c["failed"] += 1
        bad = t.state == TrialState.FAIL or "infeasible" in t.user_attrs
        self.fails_in_a_row = self.fails_in_a_row + 1 if t.state == TrialState.FAIL else 0
        if bad and self.first_error is None:
            self.first_error = failure_line(t)
            if self.report_errors:
                print(f"error: {self.first_error}", file=sys.stderr, flush=True)

    def result(self, ran: int) -> WorkResult:
        c = self.counts
        return WorkResult.of(ran, c["complete"], c["pruned"], c["failed"], c["infeasible"],
                             self.first_error)


def work(opts: WorkerOptions, on_best: Callable | None = None,
         storage: optuna.storages.BaseStorage | None = None) -> WorkResult:
    """Run trials until the study holds its total of finished trials. Returns trials run.

    Search study or memory units, the loop is the same (:func:`_plan` says what a trial is).
    A new trial is created only while the study's finished + running + queued trials are under
    its total (checked atomically by the storage): no surplus trial is created and then
    failed. A study with no total (``--n-trials 0``) runs what the worker asks (``max_trials``
    or until ``deadline``). ``storage``: the one this process already opened for
    ``opts.storage_url``.
    """
    import torch

    torch.set_num_threads(opts.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(storage or open_storage(opts.storage_url, must_exist=True),
                       opts.study_name)
    plan = _plan(study, opts, on_best)
    g = guarded(study._storage)
    if g is not None:  # queued-only studies never create a trial; others up to their total
        g.cap = (study._study_id, 0 if plan.queued_only else plan.total)
    tally = _Tally(opts.report_errors)
    ran = 0
    said_waiting = False
    logging.getLogger("optuna").setLevel(logging.CRITICAL)
    while True:
        if opts.max_trials is not None and ran >= opts.max_trials:
            break
        if opts.deadline is not None and time.time() >= opts.deadline:
            break
        if tally.fails_in_a_row >= MAX_FAILS_IN_A_ROW and not tally.counts["complete"]:
            break  # a code or data error: every trial would fail the same way
        fail_dead_local_trials(study)
        if finished_count(study) >= plan.total:
            break
        if plan.queued_only and waiting_count(study) == 0:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or not isinstance(g, BaseHeartbeat):
                break  # every unit is done (or failed too often), or nothing can be waited for
            said_waiting = _wait_for(study, running, said_waiting, opts)
            continue
        if not plan.queued_only and _others_fill_total(study, plan.total):
            # The last trials run in other workers: starting one more would be surplus. Wait
            # for them; a dead worker's trial is failed and re-queued (pid or heartbeat).
            if not isinstance(g, BaseHeartbeat):
                break
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            said_waiting = _wait_for(study, running, said_waiting, opts)
            continue
        try:
            study.optimize(plan.objective, n_trials=1, catch=plan.catch,
                           callbacks=[tally], gc_after_trial=False)
        except TotalReached:
            continue  # another worker took the last slot meanwhile: re-check, wait or end
        ran += 1
    return tally.result(ran)


def _wait_for(study: optuna.Study, running: list[FrozenTrial], said: bool,
              opts: WorkerOptions) -> bool:
    """Sleep a second while other processes run the last trials.

    Sibling processes on this host are watched by pid (a dead one's trial is re-run at once);
    trials of other hosts can only be judged by their heartbeat, so the wait may last the
    grace period: that is said once.
    """
    from dlfm_auto.study._storage import this_host

    others = sorted({str(t.user_attrs.get("host")) for t in running
                     if t.user_attrs.get("host") not in (None, this_host())})
    if others and not said:
        _, grace = heartbeat_settings()
        print(f"waiting for {len(running)} running trial(s), some on other hosts "
              f"({', '.join(others)}); a dead one is re-run after the heartbeat grace period "
              f"({grace} s)", file=sys.stderr, flush=True)
        said = True
    time.sleep(1.0)
    optuna.storages.fail_stale_trials(study)
    return said


def _others_fill_total(study: optuna.Study, total: float) -> bool:
    """Finished + running trials already make the total, and nothing is queued."""
    trials = study.get_trials(deepcopy=False)
    busy = sum(t.state in (*FINISHED, TrialState.RUNNING) for t in trials)
    queued = sum(t.state == TrialState.WAITING for t in trials)
    return busy >= total and queued == 0

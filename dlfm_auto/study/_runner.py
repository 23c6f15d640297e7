"""Creating, resuming and running studies; one loop shared by local and remote workers.

* ``create_or_resume`` is run once by the coordinator (``run-study``) before any worker starts:
  it creates the storage and study (several processes creating a new SQLite database at once
  crash), refuses a spec that differs from the stored one, fails trials left RUNNING by a dead
  process (heartbeat), and queues the work that must be (re)done: every missing grid point, and
  the parameters of trials interrupted by Ctrl-C.
* ``work`` is what every worker runs: ``study.optimize(n_trials=1)`` in a loop (heartbeats only
  run inside ``optimize``) until the study holds ``n_trials`` finished trials.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from dlfm_auto._errors import UserError
from dlfm_auto._urls import display_url, mask_secrets
from dlfm_auto.data import PrepareConfig, prepare
from dlfm_auto.models import get_family
from dlfm_auto.study._notes import METRIC_NAME, save_study_note
from dlfm_auto.study._objective import (
    FINISHED,
    Objective,
    default_sequence_length,
    grid_points,
)
from dlfm_auto.study._space import feasible_space
from dlfm_auto.study._spec import (
    SPEC_ATTR,
    StudySpec,
    check_study_name,
    code_version,
    differences,
    now_iso,
    versions,
)
from dlfm_auto.study._storage import (
    LIVE,
    TotalReached,
    fail_dead_local_trials,
    guarded,
    heartbeat_settings,
    open_storage,
    trial_point,
)

MAX_GRID_RETRIES = 3
WILCOXON_MIN_FOLDS = 5
MAX_NAME_BYTES = 120  # a study name is a folder name: well under the 255-byte file name limit
MAX_FAILS_IN_A_ROW = 3  # a worker whose first trials all fail stops (a code or data error)
TRACEBACK_CHARS = 8000
SLOT_ATTR = "dlfm_auto.worker_slots"


def make_sampler(spec: StudySpec, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; ``worker`` gives each process its own random stream.

    A grid study runs only queued points (every parameter is fixed by the queue), so it needs
    no GridSampler: Optuna's GridSampler fails on queued trials of a 1-point grid (KeyError
    'grid_id' in ``after_trial``) and hands one point to several workers.
    """
    seed = spec.seed + 1000 * worker  # distinct streams per worker: no duplicate suggestions
    if spec.sampler in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                      n_startup_trials=10)


def make_pruner(spec: StudySpec, stride: int, n_folds: int) -> optuna.pruners.BasePruner:
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=1)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, stride // 20),
                                              max_resource=stride * n_folds)
    # Median: after 5 finished trials, stop one whose best fold R² so far is below the median
    # of earlier trials at the same fold and epoch; no decision in a fold's first epochs.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min(10, stride // 2))


def build_spec(family: str, prep: PrepareConfig, *, length_given: bool, **kw: Any) -> StudySpec:
    """A spec for a new run: resolves defaults and reads the data once (errors surface here)."""
    get_family(family)  # an unknown name fails here, before the data is read
    sampler = kw.get("sampler", "tpe")
    if kw.get("pruner") == "wilcoxon" and prep.folds < WILCOXON_MIN_FOLDS:
        # A one-sided signed-rank test over k folds has smallest p-value 2^-k: below the 0.1
        # threshold only from k = 4, so with fewer than 5 folds it can never stop a trial
        # before its last fold (with 3 it pruned nothing in bench_study.py pruners).
        raise UserError(f"pruner='wilcoxon' compares trials fold by fold and needs folds >= "
                        f"{WILCOXON_MIN_FOLDS}: after k folds its smallest p-value is 2^-k, "
                        f"under its 0.1 threshold only from k = 4, so with folds={prep.folds} "
                        "it can never stop a trial early; use --folds 5 or more, or "
                        "--pruner median")
    # TPE/random search L for every family whose space has it: a non-sequence family's
    # flatten/stats feeds use the window (with L fixed at 1 they were all "today").
    fixed = length_given or sampler == "grid"
    if sampler == "grid" and not length_given:
        prep = prep.replace(sequence_length=default_sequence_length(family))
    ds = prepare(prep)
    n_folds = min(prep.folds, len(ds.fold_years))
    if kw.get("pruner") == "wilcoxon" and n_folds < WILCOXON_MIN_FOLDS:
        raise UserError(f"pruner='wilcoxon' needs folds >= {WILCOXON_MIN_FOLDS}, but these data "
                        f"give only {n_folds} fold(s) (validation years "
                        f"{', '.join(map(str, ds.fold_years)) or 'none'}); use --pruner median")
    y = np.asarray(ds.y, dtype=float)
    if len(y) and not np.nanmax(y) > np.nanmin(y):
        raise UserError(f"the target {ds.source.target} is constant ({np.nanmin(y):g} on every "
                        "sample): there is nothing to predict; pass --target with another column")
    src = ds.source
    spec = StudySpec(
        family=family, prep=prep, fixed_length=fixed, data_sha256=src.sha256,
        data_name=src.name, site=src.site, target=src.target, inputs=src.inputs, **kw,
    )
    feasible_space(spec)  # a study that no setting can fit is refused here, in one line
    return spec


def default_study_name(spec: StudySpec) -> str:
    import re

    site = spec.site or spec.data_name.split(".")[0]
    site = re.sub(r"[^A-Za-z0-9._+-]+", "_", site).strip("._") or "site"
    return (f"{spec.family}-{site}"[: MAX_NAME_BYTES - 5]
            + ("-grid" if spec.sampler == "grid" else ""))


def load_spec(study: optuna.Study) -> StudySpec:
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        raise UserError(f"study {study.study_name!r} was not created by dlfm_auto")
    return StudySpec.from_dict(raw)


def create_or_resume(storage_url: str, study_name: str, spec: StudySpec) -> optuna.Study:
    """Create the study or check the stored spec; fail dead trials; queue needed work.

    Everything from "does the study exist" to "spec stored, work queued" runs under the
    storage's exclusive lock: two processes starting on one study at once cannot both store
    different settings, nor queue the same grid point twice.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_study_name(study_name)  # before the storage is touched
    storage = open_storage(storage_url)
    g = guarded(storage)
    with g.exclusive() if g is not None else contextlib.nullcontext():
        try:
            study = optuna.create_study(storage=storage, study_name=study_name,
                                        direction="maximize", load_if_exists=True,
                                        sampler=make_sampler(spec))
        except Exception as e:
            raise UserError(f"cannot create study {study_name!r}: "
                            f"{mask_secrets(str(e).splitlines()[0])}") from None
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise UserError(f"study {study_name!r} exists and was not created by dlfm_auto")
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is None and study.trials:
            raise UserError(f"study {study_name!r} exists and was not created by dlfm_auto")
        if stored is not None:
            old = StudySpec.from_dict(stored)
            diff = differences(old.identity(), spec.identity())
            if diff:
                raise UserError(
                    f"study {study_name!r} was created with other data or settings ("
                    + "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")
                    + "); pass --study-name NEW for a new study, or the same settings to resume"
                )
        if spec.sampler == "grid":
            spec = spec.replace(n_trials=len(grid_points(spec)))
        study.set_user_attr(SPEC_ATTR, spec.to_dict())
        for k, v in (("family", spec.family), ("site", spec.site), ("data_file", spec.data_name),
                     ("data_sha256", spec.data_sha256), ("target", spec.target),
                     ("inputs", list(spec.inputs)), ("n_trials", spec.n_trials),
                     ("versions", versions()), ("code_version", code_version())):
            study.set_user_attr(k, v)
        study.set_metric_names([METRIC_NAME])  # the dashboard names the objective
        if stored is None:
            study.set_user_attr("created", now_iso())
            save_study_note(study, spec)  # the settings, until a run adds its results
        study.set_user_attr("updated", now_iso())
        fail_dead_local_trials(study)
        optuna.storages.fail_stale_trials(study)
        if spec.sampler == "grid":
            queue_missing_grid_points(study, spec)
        else:
            _requeue_interrupted(study)
    return study


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def queue_missing_grid_points(study: optuna.Study, spec: StudySpec) -> None:
    """Exact grid coverage: queue each point with no finished, running or queued trial.

    A trial stands for its queued point (``trial_point``), not for the parameters it had drawn
    when it was killed: a grid trial killed after drawing one value still covers its whole
    point. A point is given up after ``MAX_GRID_RETRIES`` trials failed with an error (not
    kills).
    """
    g = guarded(study._storage)
    with g.exclusive() if g is not None else contextlib.nullcontext():
        covered, failures = set(), {}
        for t in study.get_trials(deepcopy=False):
            k = _key(trial_point(t))
            if t.state in LIVE:
                covered.add(k)
            elif t.state == TrialState.FAIL and "traceback" in t.user_attrs:
                # only errors count: a point whose process was killed is re-run, however often
                failures[k] = failures.get(k, 0) + 1
        for point in grid_points(spec):
            k = _key(point)
            if k not in covered and failures.get(k, 0) < MAX_GRID_RETRIES:
                study.enqueue_trial(point, skip_if_exists=False)


def _requeue_interrupted(study: optuna.Study) -> None:
    """Re-run the parameters of trials that Ctrl-C interrupted (once each)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")
                and t.number not in retried and t.params):
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def waiting_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


@dataclass
class WorkerOptions:
    storage_url: str
    study_name: str
    worker: int | None = None  # sampler stream; None: a fresh slot from the study
    threads: int = 1
    device: str | None = None
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


def work(opts: WorkerOptions, on_best: Callable | None = None) -> WorkResult:
    """Run trials until the study holds its total of finished trials. Returns trials run.

    The study says what its trials are: a search study (``dlfm_auto.spec``) or the (L, seed)
    units of a memory report (``dlfm_auto.memory``); either way the loop is the same. A new
    trial is created only while the study's finished + running + queued trials are under its
    total (checked atomically by the storage): no surplus trial is created and then failed.
    A study with no total (``--n-trials 0``) runs what the worker asks (``max_trials`` or until
    ``deadline``).
    """
    import torch

    torch.set_num_threads(opts.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(opts.storage_url, must_exist=True)
    study = load_study(storage, opts.study_name, opts.storage_url)
    from dlfm_auto.reports._memory import MEMORY_ATTR, MemoryObjective

    if MEMORY_ATTR in study.user_attrs:
        mem = study.user_attrs[MEMORY_ATTR]
        if opts.data_override:
            mem = {**mem, "prep": {**mem["prep"], "data": opts.data_override}}
        objective: Callable = MemoryObjective(mem, device=opts.device)
        total: float = len(mem["lengths"]) * mem["num_models"]
        queued_only = True
        catch: tuple[type[Exception], ...] = ()  # a report unit's error stops the report
    else:
        spec = load_spec(study)
        if opts.data_override:
            spec = spec.replace(prep=spec.prep.replace(data=opts.data_override))
        check_data(spec)
        search = Objective(spec, device=opts.device)
        search.space = feasible_space(spec)
        n_folds = len(prepare(spec.prep).fold_years[: spec.prep.folds])
        worker = opts.worker if opts.worker is not None else worker_slot(study)
        study.sampler = make_sampler(spec, worker)
        study.pruner = make_pruner(spec, search.stride, n_folds)
        search.on_best = on_best
        objective, total, queued_only = _guard(search), spec.n_trials, spec.sampler == "grid"
        catch = (Exception,)  # a failed trial is recorded and shown; the study goes on
        if total == 0:  # created with --n-trials 0: no study-wide total, the worker decides
            if opts.max_trials is None and opts.deadline is None:
                raise UserError(f"study {opts.study_name!r} has no total number of trials; "
                                "pass --n-trials N or --timeout S to the worker")
            total = float("inf")
    g = guarded(study._storage)
    if g is not None:  # queued-only studies never create a trial; others up to their total
        g.cap = (study._study_id, 0 if queued_only else total)
    counts = {s: 0 for s in ("complete", "pruned", "failed", "infeasible")}
    first_error: list[str] = []
    fails_in_a_row = 0

    def record(_: optuna.Study, t: FrozenTrial) -> None:
        nonlocal fails_in_a_row
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["infeasible" if "infeasible" in t.user_attrs else "pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
        bad = t.state == TrialState.FAIL or "infeasible" in t.user_attrs
        fails_in_a_row = fails_in_a_row + 1 if t.state == TrialState.FAIL else 0
        if bad and not first_error:
            first_error.append(failure_line(t))
            if opts.report_errors:
                print(f"error: {first_error[0]}", file=sys.stderr, flush=True)

    ran = 0
    said_waiting = False
    logging.getLogger("optuna").setLevel(logging.CRITICAL)
    while True:
        if opts.max_trials is not None and ran >= opts.max_trials:
            break
        if opts.deadline is not None and time.time() >= opts.deadline:
            break
        if fails_in_a_row >= MAX_FAILS_IN_A_ROW and not counts["complete"]:
            break  # a code or data error: every trial would fail the same way
        fail_dead_local_trials(study)
        if finished_count(study) >= total:
            break
        if queued_only and waiting_count(study) == 0:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or not isinstance(g, BaseHeartbeat):
                break  # every unit is done (or failed too often), or nothing can be waited for
            said_waiting = _wait_for(study, running, said_waiting, opts)
            continue
        if not queued_only and _others_fill_total(study, total):
            # The last trials run in other workers: starting one more would be surplus. Wait
            # for them; a dead worker's trial is failed and re-queued (pid or heartbeat).
            if not isinstance(g, BaseHeartbeat):
                break
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            said_waiting = _wait_for(study, running, said_waiting, opts)
            continue
        try:
            study.optimize(objective, n_trials=1, catch=catch,
                           callbacks=[record], gc_after_trial=False)
        except TotalReached:
            continue  # another worker took the last slot meanwhile: re-check, wait or end
        ran += 1
    return WorkResult.of(ran, counts["complete"], counts["pruned"], counts["failed"],
                         counts["infeasible"], first_error[0] if first_error else None)


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


def load_study(storage: optuna.storages.BaseStorage, name: str, url: str) -> optuna.Study:
    """Load a study by name; an unknown name lists the closest names (password masked)."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        from dlfm_auto._errors import close_matches

        names = optuna.get_all_study_names(storage)
        hint = close_matches(name, names)
        more = (f"; closest: {', '.join(hint)}" if hint else
                f"; studies there: {', '.join(names[:8])}" if names else "; it holds no study")
        raise UserError(f"no study named {name!r} in {display_url(url)}{more}") from None


def _others_fill_total(study: optuna.Study, total: float) -> bool:
    """Finished + running trials already make the total, and nothing is queued."""
    trials = study.get_trials(deepcopy=False)
    busy = sum(t.state in (*FINISHED, TrialState.RUNNING) for t in trials)
    queued = sum(t.state == TrialState.WAITING for t in trials)
    return busy >= total and queued == 0


def check_data(spec: StudySpec) -> None:
    """Refuse to work on a data file whose content differs from the study's."""
    from dlfm_auto.data import load_daily

    _, _, src = load_daily(spec.prep)
    if spec.data_sha256 and src.sha256 != spec.data_sha256:
        raise UserError(
            f"data file {spec.prep.data} differs from the study's ({spec.data_name}, sha256 "
            f"{spec.data_sha256[:12]}..., this file {src.sha256[:12]}...); pass --data with "
            f"the study's file"
        )


def _worker_entry(opts: WorkerOptions, artifacts_dir: str | None) -> None:
    """Entry point of a local worker process (spawned): one-line errors, exit codes."""
    import signal

    from dlfm_auto.study._artifacts import BestModelSaver

    signal.signal(signal.SIGINT, signal.default_int_handler)
    saver = BestModelSaver(artifacts_dir) if artifacts_dir else None
    try:
        work(opts, on_best=saver)
    except KeyboardInterrupt:
        pass
    except UserError as e:
        print(f"error: {mask_secrets(str(e))}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)


def run_workers(opts: WorkerOptions, n_jobs: int, artifacts_dir: str | None,
                progress: Callable[[], None] | None = None) -> None:
    """Run ``n_jobs`` workers: in this process for 1, else as spawned processes.

    Each process takes its own sampler stream (``worker_slot``). A worker process that stopped
    on a user error (it printed the one line) makes the whole run a user error.
    """
    from dlfm_auto.study._artifacts import BestModelSaver

    if n_jobs <= 1:
        saver = BestModelSaver(artifacts_dir) if artifacts_dir else None
        work(opts, on_best=saver)
        return
    ctx = mp.get_context("spawn")
    procs = []
    for _ in range(n_jobs):
        p = ctx.Process(target=_worker_entry, args=(opts, artifacts_dir), daemon=False)
        p.start()
        procs.append(p)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=60)
        raise
    codes = [p.exitcode for p in procs]
    if any(c == UserError.exit_code for c in codes):
        raise UserError(f"{codes.count(UserError.exit_code)} of {n_jobs} worker processes "
                        "stopped on the error above")
    bad = [c for c in codes if c not in (0, None)]
    if bad:
        raise RuntimeError(f"{len(bad)} worker process(es) failed (exit codes {bad})")


class ProgressPoller:
    """Polls the storage in a thread and drives a rich progress bar (any number of workers)."""

    def __init__(self, storage_url: str, study_name: str, total: int, enabled: bool = True):
        self.url, self.name, self.total, self.enabled = storage_url, study_name, total, enabled
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

        storage = open_storage(self.url, heartbeat=False)
        study = optuna.load_study(study_name=self.name, storage=storage)
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
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    out: dict[str, Any] = {"study": study.study_name, "counts": counts,
                           "user_attrs": dict(study.user_attrs)}
    if complete:
        best: FrozenTrial = max(complete, key=lambda t: t.value)
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


__all__ = [
    "WorkerOptions", "build_spec", "create_or_resume", "default_study_name", "load_spec",
    "make_pruner", "make_sampler", "run_workers", "study_summary", "work",
]

"""Study-level figures on US-UMB (TA, PPFD_IN, SW_IN), L=30, side by side in one run.

    python bench/bench_study.py grid-vs-tpe [--max-epochs 40 | --max-epochs 0 (full budgets)]
    python bench/bench_study.py jobs [--trials 8 --max-epochs 15]
    python bench/bench_study.py pruners [--trials 16 --max-epochs 40]

grid-vs-tpe: the full 64-point DLFM LSTM grid with median pruning (wall time, best CV R²)
and, beside it in a second process (one core each), TPE + median pruning on the same data and
epoch cap for the same wall time: time to reach within 0.01 of the grid's best CV R², and best
CV R² at equal wall time. ``--max-epochs 0`` keeps the DLFM budgets (500/2200 epochs).
jobs: trials per minute, 1 worker vs 2 worker processes (SQLite), on the same queued trials.
pruners: the same seeded TPE study with no pruner and with per-epoch median pruning: wall
time and best CV R² (which scheme to default to; Wilcoxon needs 5+ folds, see pruners()).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import optuna
from _common import UMB, UMB_COLUMNS, require_data
from optuna.trial import TrialState

from dlfm_auto.data import PrepareConfig
from dlfm_auto.models import get_family
from dlfm_auto.study import build_spec, create_or_resume, open_storage
from dlfm_auto.study._processes import run_workers
from dlfm_auto.study._worker import WorkerOptions, work


def prep() -> PrepareConfig:
    return PrepareConfig(data=str(UMB), target="NEE", columns=UMB_COLUMNS, sequence_length=30)


def best(url: str, name: str) -> float:
    s = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
    done = s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(t.value for t in done) if done else float("nan")


def counts(url: str, name: str) -> dict[str, int]:
    s = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
    out: dict[str, int] = {}
    for t in s.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _grid_leg(url: str) -> None:
    """The grid study in its own process (one core), so that TPE can run beside it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work(WorkerOptions(url, "grid"))


def grid_vs_tpe(max_epochs: int | None) -> None:
    """Grid and TPE side by side: two processes, one core and one torch thread each.

    TPE runs for exactly as long as the grid does (equal wall time, same machine load); the
    time TPE took to get within 0.01 of the grid's best is read afterwards from the trials'
    completion times.
    """
    import multiprocessing as mp

    d = tempfile.mkdtemp(prefix="bench_study_")
    url = f"sqlite:///{d}/b.db"
    cap = f"max_epochs={max_epochs}" if max_epochs else "full DLFM epoch budgets"
    create_or_resume(url, "grid", build_spec("lstm", prep(), length_given=True, sampler="grid",
                                             pruner="median", max_epochs=max_epochs))
    create_or_resume(url, "tpe", build_spec("lstm", prep(), length_given=True, sampler="tpe",
                                            pruner="median", max_epochs=max_epochs,
                                            n_trials=100000))
    print(f"studies in {url} (grid, tpe)", flush=True)
    t0 = time.time()
    grid = mp.get_context("spawn").Process(target=_grid_leg, args=(url,))
    grid.start()
    while grid.is_alive():
        work(WorkerOptions(url, "tpe", max_trials=1))
        grid.join(timeout=0.01)
    grid_time = time.time() - t0
    grid_best = best(url, "grid")
    print(f"grid (64 points, median pruning, {cap}): {grid_time / 60:.1f} min, "
          f"best CV R² {grid_best:.4f}, trials {counts(url, 'grid')}")
    # TPE trials that finished within the grid's wall time (the one running at the end ran on).
    s = optuna.load_study(study_name="tpe", storage=open_storage(url, heartbeat=False))
    done = sorted((t for t in s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   if t.datetime_complete.timestamp() - t0 <= grid_time),
                  key=lambda t: t.datetime_complete)
    reached = next((t.datetime_complete.timestamp() - t0 for t in done
                    if t.value >= grid_best - 0.01), None)
    tpe_best = max((t.value for t in done), default=float("nan"))
    print(f"TPE at equal wall time ({grid_time / 60:.1f} min, beside the grid): best CV R² "
          f"{tpe_best:.4f}, {len(done)} complete, all trials {counts(url, 'tpe')}")
    if reached is None:
        print("TPE did not reach grid best - 0.01 within the grid's wall time")
    else:
        print(f"TPE reached grid best - 0.01 ({grid_best - 0.01:.4f}) after {reached / 60:.1f} min")


def pruners(trials: int, max_epochs: int) -> None:
    """The same TPE study (same seed) under each pruner: wall time and best CV R².

    Wilcoxon needs 5+ folds (refused below that; with 3 it pruned nothing: 5.3 vs 5.5 min
    without pruning, 16 trials, 40 epochs), so the 3-fold comparison is none vs median.
    """
    for pruner in ("none", "median"):
        d = tempfile.mkdtemp(prefix="bench_pruners_")
        url = f"sqlite:///{d}/p.db"
        spec = build_spec("lstm", prep(), length_given=True, sampler="tpe", pruner=pruner,
                          max_epochs=max_epochs, n_trials=trials)
        create_or_resume(url, "p", spec)
        t0 = time.perf_counter()
        work(WorkerOptions(url, "p"))
        dt = time.perf_counter() - t0
        print(f"{pruner:9} {dt / 60:5.1f} min  best CV R² {best(url, 'p'):.4f}  {counts(url, 'p')}",
              flush=True)


def jobs(trials: int, max_epochs: int) -> None:
    """The same trials (random parameters drawn once, queued in the same order) run by one
    worker process, then by two."""
    rates = {}
    queued: list[dict] = []
    for n_jobs in (1, 2):
        d = tempfile.mkdtemp(prefix="bench_jobs_")
        url = f"sqlite:///{d}/j.db"
        spec = build_spec("lstm", prep(), length_given=True, sampler="random", pruner="none",
                          max_epochs=max_epochs, n_trials=trials)
        study = create_or_resume(url, "j", spec)
        if not queued:  # draw the parameters once, in an in-memory study
            draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
            for _ in range(trials):
                t = draw.ask()
                get_family("lstm").suggest(t)  # model params only: the study's L is fixed
                queued.append(dict(t.params))
        for params in queued:
            study.enqueue_trial(params)
        t0 = time.perf_counter()
        run_workers(WorkerOptions(url, "j"), n_jobs, None)
        dt = time.perf_counter() - t0
        rates[n_jobs] = trials / (dt / 60)
        print(f"n_jobs={n_jobs}: {trials} trials in {dt:.1f} s -> {rates[n_jobs]:.2f} trials/min "
              f"{counts(url, 'j')}", flush=True)
    print(f"ratio n_jobs=2 / n_jobs=1: {rates[2] / rates[1]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["grid-vs-tpe", "jobs", "pruners"])
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--trials", type=int, default=8)
    a = ap.parse_args()
    require_data()
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if a.what == "grid-vs-tpe":
        grid_vs_tpe(40 if a.max_epochs is None else (a.max_epochs or None))
    elif a.what == "pruners":
        pruners(a.trials, a.max_epochs or 40)
    else:
        jobs(a.trials, a.max_epochs or 15)


if __name__ == "__main__":
    main()

"""Local worker processes: ``run-study --n-jobs N`` spawns N workers on this machine."""

from __future__ import annotations

import multiprocessing as mp
import sys

import optuna

from dlfm_auto._errors import UserError
from dlfm_auto._urls import mask_secrets
from dlfm_auto.study._worker import WorkerOptions, work


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
                storage: optuna.storages.BaseStorage | None = None) -> None:
    """Run ``n_jobs`` workers: in this process for 1, else as spawned processes.

    ``storage``: this process's opened storage (used by the in-process worker). Each process
    takes its own sampler stream (``worker_slot``). A worker process that stopped
    on a user error (it printed the one line) makes the whole run a user error.
    """
    from dlfm_auto.study._artifacts import BestModelSaver

    if n_jobs <= 1:
        saver = BestModelSaver(artifacts_dir) if artifacts_dir else None
        work(opts, on_best=saver, storage=storage)
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

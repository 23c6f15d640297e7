"""Scale-out figures: storage overhead per trial, and trials/min with 1, 2, 4 workers.

    python bench/bench_scale.py overhead [--trials 200]
    python bench/bench_scale.py workers [--trials 16 --max-epochs 3]

overhead: a no-op objective with 3 suggested parameters and 5 reported values per trial, run
by `study.optimize` on SQLite, PostgreSQL (127.0.0.1:5432, database test) and the journal file
backend, all with the options dlfm_auto uses (heartbeat where supported): ms per trial.
workers: a small LSTM study on US-UMB (TA, PPFD_IN, SW_IN; L=30) on PostgreSQL run by K
`worker` processes: trials per minute for K = 1, 2, 4 (2 cores: 4 workers oversubscribe).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid

import optuna
from _common import ROOT, UMB, UMB_COLUMNS, require_data

from dlfm_auto.data import PrepareConfig
from dlfm_auto.study import build_spec, create_or_resume, open_storage

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def overhead(trials: int) -> None:
    d = tempfile.mkdtemp(prefix="bench_scale_")
    urls = {"sqlite": f"sqlite:///{d}/o.db", "postgresql": PG,
            "journal": f"journal:///{d}/o.journal"}

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.suggest_int("n", 1, 10)
        trial.suggest_categorical("c", ["a", "b"])
        for step in range(5):
            trial.report(x, step)
        return x

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    res = {}
    for name, url in urls.items():
        study = optuna.create_study(storage=open_storage(url), study_name=uuid.uuid4().hex,
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=trials)
        res[name] = (time.perf_counter() - t0) / trials * 1e3
        print(f"{name:10} {res[name]:7.1f} ms per trial ({trials} trials, 5 reports each)",
              flush=True)
    print("ratios: " + ", ".join(f"{k}/sqlite {v / res['sqlite']:.2f}" for k, v in res.items()))


def workers(trials: int, max_epochs: int) -> None:
    prep = PrepareConfig(data=str(UMB), target="NEE", columns=UMB_COLUMNS, sequence_length=30)
    rates = {}
    for k in (1, 2, 4):
        name = f"scale-{k}-{uuid.uuid4().hex[:6]}"
        spec = build_spec("lstm", prep, length_given=True, sampler="random", pruner="none",
                          n_trials=trials, max_epochs=max_epochs)
        create_or_resume(PG, name, spec)
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-m", "dlfm_auto", "worker", name,
                                   "--storage", PG, "--worker-id", str(i)], cwd=ROOT,
                                  stdout=subprocess.DEVNULL) for i in range(k)]
        for p in procs:
            p.wait()
        dt = time.perf_counter() - t0
        rates[k] = trials / (dt / 60)
        print(f"{k} worker(s): {trials} trials in {dt:.1f} s -> {rates[k]:.2f} trials/min",
              flush=True)
    print("ratios: " + ", ".join(f"{k} workers / 1: {r / rates[1]:.2f}x" for k, r in rates.items()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["overhead", "workers"])
    ap.add_argument("--trials", type=int)
    ap.add_argument("--max-epochs", type=int, default=3)
    a = ap.parse_args()
    if a.what == "overhead":
        overhead(a.trials or 200)
    else:
        require_data()
        workers(a.trials or 16, a.max_epochs)


if __name__ == "__main__":
    main()

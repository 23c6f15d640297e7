"""Soak: kill -9 a grid study at random moments, then run it once more; check exact coverage.

Each round starts ``run-study dynamic_ann --sampler grid --max-epochs 25 --n-jobs 2`` (the
coordinator and its two worker processes, in their own process group) and kills the whole
group with SIGKILL (a power cut): in one round of five while it starts, else at a random
moment within ``--max-delay`` s of a trial starting. After K kills (a round that ends before
its kill does not count) the same command runs once to the end. Passing means: it exits 0,
every one of the 32 grid points finished exactly once (complete or pruned), and no trial is
left RUNNING or queued.

    .venv/bin/python bench/bench_soak.py --kills 20 --storage sqlite postgresql
    .venv/bin/python bench/bench_soak.py --surplus      # 4 SQLite workers x 60 trials

Synthetic data (4 years, the test suite's known-answer site) keep a round short; the storage
and process handling under test do not depend on the data. PostgreSQL: 127.0.0.1:5432, user
postgres, database ``test``; each run uses a fresh study name and deletes it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _site(folder: Path) -> Path:
    from conftest import simple_site, write_flux_csv

    return write_flux_csv(folder / "site.csv", simple_site(days=4 * 365))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cmd(site: Path, url: str, name: str) -> list[str]:
    return [sys.executable, "-m", "dlfm_auto", "run-study", "dynamic_ann", "--sampler", "grid",
            "--max-epochs", "25", "--n-jobs", "2", "--data", str(site), "--target", "NEE",
            "--columns", "TA", "PPFD_IN", "--eval-years", "1", "--folds", "2",
            "--sequence-length", "3", "--storage", url, "--study-name", name, "--quiet"]


_STORAGES: dict[str, object] = {}


def _trials(url: str, name: str) -> list:
    """The study's trials (one storage per URL: polling must be quick to catch a trial)."""
    import optuna

    from dlfm_auto.study import open_storage

    if url not in _STORAGES:
        _STORAGES[url] = open_storage(url, heartbeat=False)
    try:
        return optuna.load_study(study_name=name, storage=_STORAGES[url]
                                 ).get_trials(deepcopy=False)
    except KeyError:
        return []


def soak(url: str, kills: int, seed: int, site: Path, max_delay: float = 1.0) -> dict:
    """K kills at random moments, one re-run; the figures of the final state."""
    from optuna.trial import TrialState

    from dlfm_auto.study._storage import trial_point

    rng = random.Random(seed)
    name = f"soak-{uuid.uuid4().hex[:8]}"
    cmd = _cmd(site, url, name)
    killed_trials = kills_done = 0
    ended: list[int] = []  # exit codes of rounds that ended before their kill
    errors: list[str] = []
    rounds = 0
    while kills_done < kills and rounds < 3 * kills:
        rounds += 1
        # trials a previous kill left RUNNING: this round's run fails them; not its own trials
        old = {t.number for t in _trials(url, name) if t.state == TrialState.RUNNING}

        def own_running() -> int:
            return sum(t.state == TrialState.RUNNING and t.number not in old  # noqa: B023
                       for t in _trials(url, name))

        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        if rng.random() < 0.2:  # while starting: creating, checking, queueing
            time.sleep(rng.uniform(0.5, 4.0))
        else:  # inside trials: once one runs, a random moment later
            deadline = time.time() + 120
            while (time.time() < deadline and proc.poll() is None
                   and not own_running()):
                time.sleep(0.2)
            time.sleep(rng.uniform(0.0, max_delay))
        before = own_running()
        if proc.poll() is not None:  # it ended before the kill: finished, or an error
            ended.append(proc.returncode)
            if proc.returncode != 0:
                errors.append(proc.stderr.read()[-300:])
            if proc.returncode == 0:
                break  # the grid is complete: no moment is left to kill
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills_done += 1
        killed_trials += before
    t0 = time.time()
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1800)
    rerun_s = time.time() - t0
    ts = _trials(url, name)
    done = [t for t in ts if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    keys = [json.dumps(trial_point(t), sort_keys=True) for t in done]
    out = {
        "storage": url.split(":", 1)[0], "kills": kills, "rerun_exit": res.returncode,
        "rerun_s": round(rerun_s, 1), "rows": len(ts), "finished": len(done),
        "distinct_points": len(set(keys)), "points_run_twice": len(keys) - len(set(keys)),
        "failed": sum(t.state == TrialState.FAIL for t in ts),
        "running": sum(t.state == TrialState.RUNNING for t in ts),
        "waiting": sum(t.state == TrialState.WAITING for t in ts),
        "running_when_killed": killed_trials, "kills_done": kills_done,
        "rounds_ended_before_kill": ended,
        "ok": (res.returncode == 0 and not errors and len(done) == 32 and len(set(keys)) == 32
               and not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in ts)),
    }
    if res.returncode != 0:
        out["stderr"] = res.stderr[-500:]
    if errors:
        out["round_errors"] = errors
    if url.startswith("postgresql"):
        import optuna

        from dlfm_auto.study import open_storage

        optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=False))
    return out


def surplus(folder: Path, site: Path, workers: int = 4, n_trials: int = 60) -> dict:
    """``workers`` local SQLite worker processes on a study of ``n_trials``: rows, FAIL, locks."""
    from optuna.trial import TrialState

    url = f"sqlite:///{folder}/surplus.db"
    base = [sys.executable, "-m", "dlfm_auto"]
    common = ["--storage", url]
    subprocess.run([*base, "run-study", "ann", "--data", str(site), "--target", "NEE",
                    "--columns", "TA", "PPFD_IN", "--eval-years", "1", "--folds", "2",
                    "--max-epochs", "1", "--pruner", "none", "--sampler", "random",
                    "--n-trials", str(n_trials), "--n-jobs", "0", "--study-name", "s", *common],
                   cwd=ROOT, env=_env(), check=True, capture_output=True)
    t0 = time.time()
    procs = [subprocess.Popen([*base, "worker", "s", *common], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    outs = [p.communicate(timeout=1800) for p in procs]
    ts = _trials(url, "s")
    text = "".join(o + e for o, e in outs)
    return {"workers": workers, "n_trials": n_trials, "rows": len(ts),
            "complete": sum(t.state == TrialState.COMPLETE for t in ts),
            "failed": sum(t.state == TrialState.FAIL for t in ts),
            "database_is_locked": text.count("database is locked"),
            "exit_codes": [p.returncode for p in procs], "wall_s": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--storage", nargs="+", default=["sqlite", "postgresql"],
                    choices=["sqlite", "postgresql"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-delay", type=float, default=1.0,
                    help="longest wait, once a trial runs, before a kill (s)")
    ap.add_argument("--surplus", action="store_true", help="run the 4 workers x 60 trials check")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlfm_soak_") as tmp:
        folder = Path(tmp)
        site = _site(folder)
        if args.surplus:
            print(json.dumps(surplus(folder, site)))
            return
        for kind in args.storage:
            url = f"sqlite:///{folder}/soak.db" if kind == "sqlite" else PG_URL
            print(json.dumps(soak(url, args.kills, args.seed, site, args.max_delay)), flush=True)


if __name__ == "__main__":
    main()

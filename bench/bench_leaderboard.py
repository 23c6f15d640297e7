"""The leaderboard of US-UMB for all seven families (issue 12's closing figure), timed.

Runs, one process at a time (``--n-jobs 1``): a small TPE study per family
(``--n-trials``, ``--max-epochs``), a final report per study (``--num-models``), then
``report leaderboard --site US-UMB``, then ``predict`` of the whole file with each family's
ensemble; prints the wall time of every step and the leaderboard.
Everything goes to ``--workdir`` (a throw-away storage and reports folder)::

    python bench/bench_leaderboard.py                       # all phases
    python bench/bench_leaderboard.py --phase leaderboard   # only the last step, again
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import UMB, UMB_COLUMNS, require_data, run_cli

FAMILIES = ("ann", "dynamic_ann", "rnn", "lstm", "xlstm", "xgboost", "random_forest")
#: Per-family caps instead of --max-epochs: xlstm trains ~10x slower than nn.LSTM on the CPU
#: (4 epochs: 4 trials took 3.6 min); for the trees the cap counts boosting rounds / trees.
EPOCHS = {"xlstm": 4, "xgboost": 300, "random_forest": 100}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/dlfm_bench_leaderboard")
    ap.add_argument("--phase", choices=["all", "studies", "finals", "leaderboard", "predict"],
                    default="all")
    ap.add_argument("--n-trials", type=int, default=4)
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--num-models", type=int, default=2)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    a = ap.parse_args()
    require_data()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{work}/umb.db"
    reports = work / "reports"
    total = 0.0
    if a.phase in ("all", "studies"):
        for fam in a.families:
            epochs = EPOCHS.get(fam, a.max_epochs)
            dt = run_cli(["run-study", fam, "--data", str(UMB), "--target", "NEE",
                      "--columns", *UMB_COLUMNS, "--n-trials", str(a.n_trials),
                      "--max-epochs", str(epochs), "--n-jobs", "1", "--storage", storage,
                      "--quiet"])
            total += dt
            print(f"run-study {fam:14s} {a.n_trials} trials, cap {epochs:3d} epochs/rounds: {dt:7.1f} s",
                  flush=True)
    if a.phase in ("all", "finals"):
        for fam in a.families:
            dt = run_cli(["report", "final", f"{fam}-US-UMB", "--num-models", str(a.num_models),
                      "--storage", storage, "--out", str(reports)])
            total += dt
            print(f"report final {fam:14s} {a.num_models} models: {dt:7.1f} s", flush=True)
    if a.phase in ("all", "leaderboard"):
        dt = run_cli(["report", "leaderboard", "--site", "US-UMB", "--storage", storage,
                  "--out", str(reports)])
        total += dt
        print(f"report leaderboard: {dt:.1f} s", flush=True)
        folder = reports / "leaderboard-US-UMB"
        print((folder / "report.md").read_text())
        rows = json.loads((folder / "metrics.json").read_text())["rows"]
        print(f"{len(rows)} rows (studies and baselines) in {folder}/metrics.json")
    if a.phase in ("all", "predict"):  # every family's saved ensemble reloads and predicts
        for fam in a.families:
            out = work / f"pred-{fam}.csv"
            dt = run_cli(["predict", f"{fam}-US-UMB", "--data", str(UMB), "--out", str(out),
                      "--reports", str(reports)])
            total += dt
            n = sum(1 for _ in out.open()) - 1
            print(f"predict {fam:14s} {n} days: {dt:6.1f} s", flush=True)
    print(f"wall time of the steps run: {total:.1f} s ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()

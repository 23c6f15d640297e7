"""Shared bits of the benchmark scripts: where the real data is, and a timer."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
UMB = DATA / "oneflux" / "US-UMB_NEE_met.csv.gz"
UMB_COLUMNS = ("TA", "PPFD_IN", "SW_IN")


def require_data() -> None:
    if not UMB.exists():
        sys.exit(f"benchmark needs the real data at {DATA} (../shared/data beside the repo)")


def timeit(fn: Callable[[], object], repeat: int = 5, setup: Callable[[], object] | None = None
           ) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs (``setup`` untimed before each)."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_cli(cmd: list[str], cwd: Path = ROOT) -> float:
    """Run ``python -m dlfm_auto CMD`` in ``cwd`` as a user would; its wall time in s (exit
    with its output when it fails)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DLFM_AUTO_PROGRESS": "0"}
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "dlfm_auto", *cmd], env=env, cwd=cwd,
                         capture_output=True, text=True)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        print(res.stdout[-2000:], res.stderr[-2000:], sep="\n")
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}")
    return dt

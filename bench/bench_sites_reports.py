"""The reports of a multi-site study (issue 15), timed: per-site final table, memory atlas.

Runs, one process at a time: a small leave-one-site-out XGBoost study over ``--sites``
(``--n-trials``, ``--max-epochs``), ``report final`` (``--num-models``), ``report memory
--study-name`` (``--lengths`` x ``--seeds``), ``report memory`` again (resumed: nothing left to
train), and ``predict`` of the first site's file; prints each step's wall time, the per-site
table of the final report and the atlas' per-site CV R² per L with 95% intervals.
Everything goes to ``--workdir`` (a throw-away storage and reports folder)::

    python bench/bench_sites_reports.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import DATA, UMB_COLUMNS, require_data, run_cli

SITES = ("US-UMB", "US-NR1", "US-MMS")


def _f(v: object) -> str:
    return f"{v:7.3f}" if isinstance(v, int | float) else f"{'n/a':>7}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/dlfm_bench_sites_reports")
    ap.add_argument("--sites", nargs="+", default=list(SITES))
    ap.add_argument("--n-trials", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--num-models", type=int, default=2)
    ap.add_argument("--lengths", default="1,7,30")
    ap.add_argument("--seeds", type=int, default=2)
    a = ap.parse_args()
    require_data()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{work}/sites.db"
    files = [str(DATA / "oneflux" / f"{s}_NEE_met.csv.gz") for s in a.sites]
    name = "xgb-sites"
    common = ["--storage", storage]
    times = {}
    times["run-study"] = run_cli(["run-study", "xgboost", "--data", *files, "--cv", "sites",
                              "--columns", *UMB_COLUMNS, "--n-trials", str(a.n_trials),
                              "--max-epochs", str(a.max_epochs), "--study-name", name,
                              *common], work)
    times["report final"] = run_cli(["report", "final", name, "--num-models", str(a.num_models),
                                 "--out", str(work / "reports"), *common], work)
    mem = ["report", "memory", "--study-name", name, "--sequence-lengths", a.lengths,
           "--num-models", str(a.seeds), "--max-epochs", str(a.max_epochs),
           "--out", str(work / "reports"), *common]
    times["report memory"] = run_cli(mem, work)
    times["report memory (again: resumed, nothing to train)"] = run_cli(mem, work)
    times["predict (first site)"] = run_cli(["predict", name, "--data", files[0], "--out",
                                         str(work / "pred.csv"), "--reports",
                                         str(work / "reports")], work)
    for step, dt in times.items():
        print(f"{step:50s} {dt:7.1f} s")
    m = json.loads((work / "reports" / name / "final" / "metrics.json").read_text())
    print(f"\nfinal report, {len(m['sites'])} sites, cv={m['cv_mode']}: held-out R² "
          f"(ensemble of {m['num_models']}) and CV R² (best trial) beside the baselines")
    print(f"{'site':8s} {'years':18s} {'model':>7} {'clim':>7} {'linear':>7} | {'cv':>7} "
          f"{'cv clim':>7} {'cv lin':>7}")
    for r in m["per_site"]:
        print(f"{r['site']:8s} {r['heldout_years']:18s} {_f(r['model_r2'])} "
              f"{_f(r.get('climatology_r2'))} {_f(r.get('linear_r2'))} | "
              f"{_f(r['cv_model_r2'])} {_f(r.get('cv_climatology_r2'))} "
              f"{_f(r.get('cv_linear_r2'))}")
    s = m["per_site_summary"]
    print(f"median held-out R² {_f(s['median_heldout_r2'])}, median CV R² "
          f"{_f(s['median_cv_r2'])}")
    mm = json.loads((work / "reports" / name / "memory" / "metrics.json").read_text())
    print(f"\nmemory atlas ({mm['num_models']} seeds): CV R² per L [95% CI years x seeds]")
    for r in [*mm["site_rows"], *({"site": "all", **x} for x in mm["rows"])]:
        if r["split"] == "cv":
            print(f"{r['site']:8s} L={r['sequence_length']:3d} {r['r2_mean']:7.3f} "
                  f"[{r['r2_ci_low']:.3f}, {r['r2_ci_high']:.3f}]")


if __name__ == "__main__":
    main()

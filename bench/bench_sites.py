"""Leave-one-site-out over the six sub-daily shared sites: issue 15's closing figures, printed.

    python bench/bench_sites.py [--trials 10] [--lstm-trials 8] [--max-epochs 30]
        [--xgb-rounds 400] [--single-trials 6] [--n-jobs 2] [--families xgboost lstm]

Sites: US-UMB, US-NR1, US-Me6, US-MMS, US-Var (ONEFlux NEE) and US-Tw3 (BASE, FC); drivers
TA, PPFD_IN, SW_IN (the ones every site has). For each family a seeded TPE study with
``--cv sites --cv-score median`` (each fold holds out one whole site; trials are ranked by
their median site R²; every site's last 3 years stay out of the study) that also searches
per-site driver standardisation (``--search-site-norm``) and L.
Printed per site, on the same days (the best trial's target days):

- the study's R² on the site when it was held out (``site_r2``);
- the naive pooled XGBoost of the issue (400 trees, depth 5, lr 0.05; today's drivers and
  their 7- and 30-day means; no site features), trained on the other five sites, on each
  study's own target days;
- the naive model's settings trained by the tool itself (its folds, its ``stats`` feed at L=30,
  rounds chosen on each training site's newest year): whether the pipeline or the search
  holds a study back;
- the climatology of the other sites (their mean seasonal cycle) and the linear baseline;
- the site's own single-site model: a TPE study of the same family on that site alone
  (season-year folds inside the site, the same budget caps; ``--single-trials`` trials).

Then the median over sites and each study's wall time. Timings are from a 2-core machine
that other jobs share; the R² figures do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, ROOT, require_data

SITES = {
    "US-UMB": DATA / "oneflux" / "US-UMB_NEE_met.csv.gz",
    "US-NR1": DATA / "oneflux" / "US-NR1_NEE_met.csv.gz",
    "US-Me6": DATA / "oneflux" / "US-Me6_NEE_met.csv.gz",
    "US-MMS": DATA / "oneflux" / "US-MMS_NEE_met.csv.gz",
    "US-Var": DATA / "oneflux" / "US-Var_NEE_met.csv.gz",
    "US-Tw3": DATA / "US-Tw3" / "AMF_US-Tw3_BASE_HH_5-5.csv.gz",
}
COLUMNS = ("TA", "PPFD_IN", "SW_IN")
NAIVE = {"n_estimators": 400, "max_depth": 5, "learning_rate": 0.05}
#: Static site features for ``--site-info`` (AmeriFlux site pages: IGBP class, latitude,
#: elevation in m): public site metadata, not measurements from the data files.
SITE_INFO = """site,igbp,lat,elevation
US-UMB,DBF,45.5598,234
US-NR1,ENF,40.0329,3050
US-Me6,ENF,44.3233,998
US-MMS,DBF,39.3232,275
US-Var,GRA,38.4133,129
US-Tw3,CRO,38.1159,-9
"""


def run_study(url: str, name: str, family: str, files: list[Path], extra: list[str],
              trials: int, cap: int, n_jobs: int) -> float:
    """One study through the command line (as a user runs it); its wall time in s."""
    cmd = [sys.executable, "-m", "dlfm_auto", "run-study", family, "--storage", url,
           "--study-name", name, "--data", *map(str, files), "--columns", *COLUMNS,
           "--n-trials", str(trials), "--max-epochs", str(cap), "--n-jobs", str(n_jobs),
           "--quiet", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{name}: run-study failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def best(url: str, name: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "dlfm_auto", "best", name, "--storage", url,
                        "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def naive_and_baselines(url: str, name: str) -> dict[str, dict[str, float]]:
    """The naive pooled XGBoost and the baselines per held-out site, on the best trial's
    target days (the same folds: :meth:`Dataset.folds`)."""
    import optuna
    import xgboost as xgb

    from dlfm_auto.data import prepare
    from dlfm_auto.models import get_family
    from dlfm_auto.study import open_storage
    from dlfm_auto.study._create import load_spec
    from dlfm_auto.study._objective import trial_data
    from dlfm_auto.study._progress import best_trial
    from dlfm_auto.training import baselines, group_scores, train_split

    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
    spec = load_spec(study)
    cfg = trial_data(spec, best_trial(study))
    # L = 30 windows for the 30-day means, on the same target days (matched at >= 30)
    # the naive model: plain drivers, no site features, no per-site scaling
    ds = prepare(cfg.replace(sequence_length=30, match_length=max(30, cfg.match_length or 30),
                             site_norm=False, site_info=None))
    out: dict[str, dict[str, float]] = {"naive": {}}
    for label, val in ds.folds():
        train = ~ds.heldout & ~val

        def feats(m: np.ndarray) -> np.ndarray:
            X = ds.X[m].astype(np.float64)
            return np.concatenate([X[:, -1], X[:, -7:].mean(1), X.mean(1)], axis=1)

        model = xgb.XGBRegressor(**NAIVE, n_jobs=1, random_state=0)
        model.fit(feats(train), ds.y[train])
        site = label.split("=", 1)[1]
        out["naive"].update({k: v["r2"] for k, v in group_scores(
            ds.y[val].astype(np.float64), model.predict(feats(val)).astype(np.float64),
            ds.sample_sites[val]).items()})
        assert set(ds.sample_sites[val]) == {site}
    # the naive model's settings through the tool's own folds and trainer (stats feed: today,
    # 30-day mean and variance; rounds chosen on each training site's newest year)
    fam = get_family("xgboost")
    out["naive settings, tool's trainer"] = {}
    for split in ds.cv_splits():
        r = train_split(fam, {"feed": "stats", **NAIVE}, split, seed=0)
        out["naive settings, tool's trainer"][split.name.split("=", 1)[1]] = float(r.r2)
    per = baselines.pooled_site_scores(ds.cv_splits())
    for b, scores in per.items():
        out[b] = {k: v["r2"] for k, v in scores.items()}
    out["days"] = {k: int(np.sum(ds.sample_sites[~ds.heldout] == k)) for k in ds.site_names}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="+", default=["xgboost", "lstm"])
    ap.add_argument("--trials", type=int, default=10, help="xgboost study trials")
    ap.add_argument("--lstm-trials", type=int, default=8)
    ap.add_argument("--max-epochs", type=int, default=30, help="LSTM epoch cap")
    ap.add_argument("--xgb-rounds", type=int, default=400, help="XGBoost round cap")
    ap.add_argument("--single-trials", type=int, default=6,
                    help="trials of each site's own study (0: leave them out)")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--out", help="folder for the study database (default: a temp folder)")
    ap.add_argument("--cv-score", default="median", choices=["mean", "median", "pooled"],
                    help="the LOSO studies' trial value (default median: the issue's goal)")
    ap.add_argument("--no-site-info", action="store_true",
                    help="leave out the static site features (IGBP, latitude, elevation)")
    args = ap.parse_args()
    require_data()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_sites_"))
    out.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{out}/sites.db"
    files = list(SITES.values())
    loso = ["--cv", "sites", "--search-site-norm", "--cv-score", args.cv_score]
    if not args.no_site_info:
        (out / "sites.csv").write_text(SITE_INFO)
        loso += ["--site-info", str(out / "sites.csv")]
    rows: dict[str, dict[str, float]] = {s: {} for s in SITES}
    walls: dict[str, float] = {}
    for family in args.families:
        trials = args.trials if family == "xgboost" else args.lstm_trials
        cap = args.xgb_rounds if family == "xgboost" else args.max_epochs
        name = f"{family}-loso"
        walls[name] = run_study(url, name, family, files, loso, trials, cap, args.n_jobs)
        b = best(url, name)
        params = {k: v for k, v in b["params"].items()}
        print(f"{name}: {trials} trials, cap {cap}, {walls[name]:.0f} s; best #{b['number']} "
              f"({args.cv_score}) {b['value']:.3f}, mean site R² {np.mean(b['fold_r2']):.3f}, "
              f"median site R² {b['median_site_r2']:.3f}, pooled R² "
              f"{b['pooled_r2']:.3f}; params {params}", flush=True)
        for s, r2 in b["site_r2"].items():
            rows[s][f"{family} LOSO"] = r2
        if not args.single_trials:
            continue
        for s, path in SITES.items():
            sname = f"{family}-{s}"
            walls[sname] = run_study(url, sname, family, [path], [], args.single_trials, cap,
                                     args.n_jobs)
            rows[s][f"{family} own site"] = best(url, sname)["value"]
        print(f"{family} single-site studies: "
              + ", ".join(f"{s} {rows[s][f'{family} own site']:.3f}" for s in SITES)
              + f" ({sum(walls[f'{family}-{s}'] for s in SITES):.0f} s)", flush=True)
    # on each study's own target days (its matched length): the naive model and baselines
    nbs = {f: naive_and_baselines(url, f"{f}-loso") for f in args.families}
    for f, nb in nbs.items():
        for s in SITES:
            rows[s][f"naive XGBoost ({f} days)"] = nb["naive"][s]
    nb = nbs[args.families[0]]
    for s in SITES:
        rows[s]["naive settings, tool's trainer"] = nb["naive settings, tool's trainer"][s]
        rows[s]["other-sites climatology"] = nb["climatology"][s]
        rows[s]["linear"] = nb["linear"][s]
    cols = [c for c in rows["US-UMB"]]
    print(f"\nR² per held-out site (training years only; days per site on the "
          f"{args.families[0]} study's days {nb['days']})")
    print("| site | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for s in SITES:
        print(f"| {s} | " + " | ".join(f"{rows[s].get(c, float('nan')):.2f}" for c in cols) + " |")
    print("| median | " + " | ".join(
        f"{np.median([rows[s][c] for s in SITES]):.2f}" for c in cols) + " |")
    for family in args.families:
        loso = [rows[s][f"{family} LOSO"] for s in SITES]
        ahead = sum(rows[s][f"{family} LOSO"] > rows[s][f"naive XGBoost ({family} days)"]
                    for s in SITES)
        print(f"{family}: median LOSO R² {np.median(loso):.2f} (goal >= 0.5), sites below 0: "
              f"{sum(r < 0 for r in loso)} (goal 0), ahead of the naive model at {ahead}/6 sites")
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
          + f"; all {sum(walls.values()):.0f} s")


if __name__ == "__main__":
    main()

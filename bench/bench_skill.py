"""Honest skill on US-UMB (TA, PPFD_IN, SW_IN): issue 10's closing figures, printed.

    python bench/bench_skill.py [epochs] [studies] [memory]      (default: all three)
        [--trials 8] [--max-epochs 30] [--xgb-rounds 300] [--memory-epochs 30] [--seeds 2]

epochs: mean CV R² (folds 2018/2017/2016) of an Adam LSTM 2x16, L=30, 80 epochs, when each
  fold's epoch is (a) the best on the fold's own validation year (the old objective; patience
  50 emulated on the same run's per-epoch validation R²), (b) chosen on the fold's inner
  training year (the new objective), (c) the last epoch; the same for XGBoost rounds
  (lr 0.05, depth 6, flatten feed, 1000 rounds, early stopping 100).
studies: a small seeded TPE LSTM study and XGBoost study (median pruning, capped budgets):
  CV R², held-out R² (final report, 2-model ensemble), both baselines on the CV folds and the
  held-out years, skill vs climatology and anomaly R² (CV and held-out).
memory: the memory curve on CV folds at L = 1, 7, 30, 90 (fixed Adam LSTM 2x16, capped
  epochs, a few seeds), 95% intervals from the year x seed bootstrap; held-out beside.
One process, one torch thread (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import UMB, UMB_COLUMNS, require_data

from dlfm_auto.data import PrepareConfig, prepare
from dlfm_auto.models import get_family
from dlfm_auto.training import train_split

LSTM = {"hidden_size": 16, "num_layers": 2, "dropout": 0.0, "optimizer": "adam", "lr": 0.01,
        "weight_decay": 1e-6, "batch_size": 64, "epochs": 80}
XGB = {"feed": "flatten", "learning_rate": 0.05, "n_estimators": 1000, "max_depth": 6}


def prep(L: int = 30) -> PrepareConfig:
    return PrepareConfig(data=str(UMB), target="NEE", columns=UMB_COLUMNS, sequence_length=L)


def _old_choice(curve: list[float], patience: int) -> tuple[float, int]:
    """The validation R² the old objective returned (best so far, stopping after patience)."""
    best, at, since = -math.inf, -1, 0
    for i, r in enumerate(curve):
        if r > best + 1e-7:
            best, at, since = r, i, 0
        else:
            since += 1
            if since >= patience:
                break
    return best, at


def epochs_table() -> None:
    import dataclasses

    splits = prepare(prep(30)).cv_splits()
    print(f"folds {[s.val_years[0] for s in splits]}, inner years "
          f"{[int(s.train_years[s.inner_val][0]) for s in splits]}, L=30, "
          f"window_gap_days={prep().window_gap_days}")
    for name, params, patience in (("lstm", LSTM, 50), ("xgboost", XGB, 100)):
        fam = get_family(name)
        a, b, c, chosen_a, chosen_b = [], [], [], [], []
        t0 = time.perf_counter()
        for i, s in enumerate(splits):
            # old objective: trained on every training year, curve on the validation year
            full = train_split(fam, params, dataclasses.replace(s, inner_val=None),
                               seed=i, patience=patience)
            curve = full.history["val_r2"]
            r2, at = _old_choice(curve, patience)
            a.append(r2)
            chosen_a.append(at)
            c.append(curve[-1])
            new = train_split(fam, params, s, seed=i, patience=patience)
            b.append(new.r2)
            chosen_b.append(new.best_epoch)
        unit = "epoch" if name == "lstm" else "round"
        print(f"{name}: mean CV R² (a) {unit} chosen on the validation year {np.mean(a):.3f}  "
              f"(b) chosen on the inner training year {np.mean(b):.3f}  (c) last {unit} "
              f"{np.mean(c):.3f}   [per fold a {np.round(a, 3).tolist()} b "
              f"{np.round(b, 3).tolist()} c {np.round(c, 3).tolist()}; chosen {unit}s "
              f"(a) {chosen_a} (b) {chosen_b}; {time.perf_counter() - t0:.0f} s]")


def studies(trials: int, max_epochs: int, xgb_rounds: int, out: Path) -> None:
    import optuna

    from dlfm_auto.reports._final import final_report
    from dlfm_auto.study import build_spec, create_or_resume, open_storage
    from dlfm_auto.study._progress import study_summary
    from dlfm_auto.study._worker import WorkerOptions, work

    url = f"sqlite:///{out}/skill.db"
    for family, cap in (("lstm", max_epochs), ("xgboost", xgb_rounds)):
        t0 = time.perf_counter()
        spec = build_spec(family, prep(1), length_given=False, n_trials=trials,
                          max_epochs=cap, seed=0)
        create_or_resume(url, family, spec)
        work(WorkerOptions(url, family))
        study = optuna.load_study(study_name=family, storage=open_storage(url, heartbeat=False))
        s = study_summary(study, skill=True)["best"]
        dest = final_report(url, family, num_models=2, out_root=out / "reports")
        m = json.loads((dest / "metrics.json").read_text())
        ens = next(r for r in m["rows"] if r["model"] == "ensemble mean" and r["split"] == "eval")
        held = {r["model"].split(": ")[1]: r["r2"] for r in m["rows"]
                if r["model"].startswith("baseline")}
        base = {k: round(v["cv_r2"], 3) for k, v in s["baselines"].items()}
        print(f"{family} TPE study ({trials} trials, cap {cap} {'epochs' if family == 'lstm' else 'rounds'}"
              f", {time.perf_counter() - t0:.0f} s): best L={s['sequence_length']}, params "
              f"{ {k: v for k, v in s['params'].items() if k != 'sequence_length'} }")
        print(f"  CV R² {s['value']:.3f}; baselines on the same folds {base}; skill vs "
              f"climatology {s['skill_vs_climatology']:.3f}; anomaly R² {s['anomaly_r2']:.3f}; "
              f"inner-chosen {'epochs' if family == 'lstm' else 'rounds'} {s['best_epochs']}")
        print(f"  held-out {m['eval_years']}: R² {ens['r2']:.3f} (2-model ensemble, budget "
              f"{m['epochs_budget']}); baselines {dict((k, round(v, 3)) for k, v in held.items())}"
              f"; skill vs climatology {m['heldout']['skill_vs_climatology']:.3f}; anomaly R² "
              f"{m['heldout']['anomaly_r2']:.3f}; days {m['n_eval']} held-out, "
              f"{sum(m['days_per_month']['cv_validation'].values())} CV validation")


def memory(epochs: int, seeds: int, out: Path) -> None:
    from dlfm_auto.reports._memory import memory_report

    t0 = time.perf_counter()
    params = ",".join(f"{k}={v}" for k, v in {**LSTM, "epochs": epochs}.items())
    dest = memory_report(f"sqlite:///{out}/mem.db", "lstm", prep(1), lengths=(1, 7, 30, 90),
                         num_models=seeds, params_source=params, max_epochs=epochs,
                         out_root=out / "reports")
    m = json.loads((dest / "metrics.json").read_text())
    print(f"memory curve (Adam LSTM 2x16, {epochs} epochs cap, {seeds} seeds, matched at L=90: "
          f"{m['n_target_days']} days; CV folds {m['fold_years']}; "
          f"{time.perf_counter() - t0:.0f} s); baselines CV "
          f"{ {k: round(v['cv_r2'], 3) for k, v in m['baselines']['cv'].items()} }")
    for r in m["rows"]:
        print(f"  L={r['sequence_length']:>3} {r['split']:>4}: R² {r['r2_mean']:.3f} "
              f"[{r['r2_ci_low']:.3f}, {r['r2_ci_high']:.3f}]  anomaly R² "
              f"{r['anom_r2_mean']:.3f} [{r['anom_r2_ci_low']:.3f}, {r['anom_r2_ci_high']:.3f}]"
              f"  n={r['n_samples']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["epochs", "studies", "memory"])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--xgb-rounds", type=int, default=300)
    ap.add_argument("--memory-epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    require_data()
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="bench_skill_"))
    if "epochs" in args.parts:
        epochs_table()
    if "studies" in args.parts:
        studies(args.trials, args.max_epochs, args.xgb_rounds, out)
    if "memory" in args.parts:
        memory(args.memory_epochs, args.seeds, out)


if __name__ == "__main__":
    main()

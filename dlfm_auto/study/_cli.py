"""Study verbs: run-study, worker, studies, best, dashboard."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dlfm_auto._arguments import Verb, artifacts_parent, count, seconds, storage_parent
from dlfm_auto._errors import UserError
from dlfm_auto._urls import StorageURL
from dlfm_auto.data._arguments import add_moved_data, config_from_args, data_parent
from dlfm_auto.data._config import DEFAULT_DATA
from dlfm_auto.study import _config_file as config_file
from dlfm_auto.study._spec import SPEC_ATTR

if TYPE_CHECKING:
    import optuna


def _run_study_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("family", nargs="?", help="model family: ann, dynamic_ann, rnn, lstm, xlstm, "
                                             "xgboost, random_forest (or `family` in --config)")
    p.add_argument("--study-name", help="default: FAMILY-SITE (+ -grid)")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "grid", "random"])
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "wilcoxon", "none"])
    p.add_argument("--n-trials", type=count(0, "--n-trials"), default=20,
                   help="total trials wanted in the study (0: no total, workers decide)")
    p.add_argument("--timeout", type=seconds, help="stop starting trials after S seconds")
    p.add_argument("--max-epochs", type=count(1, "--max-epochs"), help="cap every epoch budget")
    p.add_argument("--patience", type=count(1, "--patience"), default=50,
                   help="early-stopping patience (epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-jobs", "--n-workers", dest="n_jobs", type=count(0, "--n-jobs"), default=1,
                   help="parallel local worker processes (1 torch thread each); 0: only "
                        "create the study for `worker` processes to join")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--cv-score", default="mean", choices=["mean", "median", "pooled"],
                   help="a trial's value: the mean of its fold R² (default), their median "
                        "(less ruled by one bad fold or site), or pooled (several sites: R² of "
                        "all folds' predictions together)")
    p.add_argument("--search-site-norm", action="store_true",
                   help="several sites: trials draw --site-norm (per-site driver "
                        "standardisation) on or off as a searched parameter")
    config_file.add_config_option(p)  # --config FILE.toml; keep it after every option


def run_study(args: argparse.Namespace) -> int:
    from dlfm_auto.study._create import build_spec, create_or_resume, default_study_name
    from dlfm_auto.study._processes import run_workers
    from dlfm_auto.study._progress import ProgressPoller, finished_count
    from dlfm_auto.study._worker import WorkerOptions

    args = config_file.resolve(args)  # defaults < --config file < options typed
    if args.data == DEFAULT_DATA and not Path(args.data).exists():
        raise UserError(f"no {DEFAULT_DATA}: pass --data PATH, or run "
                        "`python -m dlfm_auto demo-data` to write a synthetic demo site")
    prep = config_from_args(args)
    spec = build_spec(
        args.family, prep, length_given=args.sequence_length is not None,
        sampler=args.sampler, pruner=args.pruner, n_trials=args.n_trials,
        max_epochs=args.max_epochs, seed=args.seed, patience=args.patience,
        search_site_norm=bool(args.search_site_norm), cv_score=args.cv_score,
    )
    from dlfm_auto.study._space import feasible_space
    from dlfm_auto.study._spec import check_study_name
    from dlfm_auto.study._storage import open_storage

    note = feasible_space(spec).note
    if note:
        print(f"note: {note}")
    name = default_study_name(spec) if args.study_name is None else args.study_name
    url = args.storage
    check_study_name(name)  # before the storage is opened (opening creates a SQLite file)
    storage = open_storage(url)  # once for this process: creation, the worker, progress, summary
    study = create_or_resume(storage, name, spec)
    config_file.store_on_study(study, args)
    first_new = len(study.get_trials(deepcopy=False))
    total = study.user_attrs["n_trials"]
    done = finished_count(study)
    print(f"study {name!r} in {args.storage.display}: {spec.family} on {spec.data_name} "
          f"(target {spec.target}; inputs {', '.join(spec.inputs)}); {done}/{total} finished")
    if args.n_jobs == 0 or (args.n_trials == 0 and args.sampler != "grid"):
        total_hint = "" if args.n_trials else " --n-trials N"
        print(f"created; workers join with: python -m dlfm_auto worker {name} "
              f"--storage {args.storage.display}{total_hint}")
        return 0
    artifacts = args.artifact_dir or url.artifacts_dir
    opts = WorkerOptions(
        storage_url=url, study_name=name, report_errors=args.n_jobs <= 1,
        deadline=(time.time() + args.timeout) if args.timeout else None,
    )
    t0 = time.time()
    try:
        with ProgressPoller(storage, name, total,
                            enabled=not args.quiet and sys.stderr.isatty() or _force_bar()):
            run_workers(opts, max(1, args.n_jobs), artifacts, storage=storage)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished trials are saved in {args.storage.display}; "
              "run the same command to resume", file=sys.stderr)
        return 130
    return _print_summary(storage, url, name, time.time() - t0, artifacts, first_new,
                          report_errors=args.n_jobs > 1)


def _force_bar() -> bool:
    import os

    return os.environ.get("DLFM_AUTO_PROGRESS") == "1"


def _worker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name")
    add_moved_data(p)
    p.add_argument("--n-trials", type=count(1, "--n-trials"),
                   help="stop after this many trials from this worker")
    p.add_argument("--timeout", type=seconds, help="stop starting trials after S seconds")
    p.add_argument("--worker-id", type=count(0, "--worker-id"), default=None,
                   help="sampler stream (default: a fresh one from the study)")


def worker(args: argparse.Namespace) -> int:
    from dlfm_auto.study._artifacts import BestModelSaver
    from dlfm_auto.study._worker import WorkerOptions, work

    opts = WorkerOptions(
        storage_url=args.storage, study_name=args.study_name, data_override=args.data,
        worker=args.worker_id, max_trials=args.n_trials, report_errors=True,
        deadline=(time.time() + args.timeout) if args.timeout else None,
    )
    saver = BestModelSaver(args.artifact_dir or args.storage.artifacts_dir)
    try:
        r = work(opts, on_best=saver)
    except KeyboardInterrupt:
        print("interrupted: the running trial is marked failed and will be re-run",
              file=sys.stderr)
        return 130
    print(f"worker finished: ran {int(r)} trial(s) of study {args.study_name!r}: "
          f"{r.complete} complete, {r.pruned} pruned, {r.infeasible} infeasible, "
          f"{r.failed} failed")
    if int(r) and not r.complete and not r.pruned:
        print(f"error: no trial finished ({r.failed} failed, {r.infeasible} infeasible); "
              f"first: {r.first_error}", file=sys.stderr)
        return 1
    return 0


def _no_options(p: argparse.ArgumentParser) -> None:
    pass


def studies(args: argparse.Namespace) -> int:
    import optuna
    from rich.console import Console
    from rich.table import Table

    from dlfm_auto.study._progress import study_summary
    from dlfm_auto.study._storage import open_storage

    storage = open_storage(args.storage, heartbeat=False, must_exist=True)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if not names:
        print(f"no studies in {args.storage.display}")
        return 0
    table = Table(title=f"studies in {args.storage.display}")
    for col in ("study", "family", "site", "complete", "pruned", "failed", "running",
                "best R²", "last update"):
        table.add_column(col)
    for n in names:
        s = study_summary(optuna.load_study(study_name=n, storage=storage))
        c, ua = s["counts"], s["user_attrs"]
        best = f"{s['best']['value']:.4f}" if "best" in s else "-"
        table.add_row(n, str(ua.get("family", "?")), str(ua.get("site", "?")),
                      str(c["complete"]), str(c["pruned"]), str(c["fail"]), str(c["running"]),
                      best, str(s["last_update"] or "-"))
    Console(width=140).print(table)
    return 0


def _best_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name")
    p.add_argument("--json", action="store_true")


def best(args: argparse.Namespace) -> int:
    from dlfm_auto.study._create import load_study
    from dlfm_auto.study._progress import study_summary

    study = load_study(args.storage, args.study_name)
    s = study_summary(study, skill=True)
    if "best" not in s:
        raise UserError(f"study {args.study_name!r} has no complete trial yet")
    if args.json:
        print(json.dumps({"study": s["study"], "counts": s["counts"], **s["best"]}, indent=2))
        return 0
    b = s["best"]
    sd = b.get("cv_r2_sd")
    print(f"study {s['study']}: best trial #{b['number']}  CV R² {b['value']:.4f}"
          + (f" ± {sd:.4f}" if sd is not None else ""))
    for k, v in sorted(b["params"].items()):
        print(f"  {k} = {v}")
    if b.get("fold_r2"):
        labels = b.get("fold_labels") or b["fold_val_years"] or []
        folds = zip(labels, b["fold_r2"], strict=False)
        print("  folds: " + ", ".join(f"{y}: {r:.3f}" for y, r in folds))
    if b.get("site_r2"):
        print(f"  per site: median R² {_num(b.get('median_site_r2'))}, pooled R² "
              f"{_num(b.get('pooled_r2'))}")
    for line in skill_lines(b):
        print("  " + line)
    return 0


def _num(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) else "n/a"


def skill_lines(b: dict) -> list[str]:
    """The best trial's skill beside the baselines on the same folds (text lines)."""
    if not b.get("baselines"):
        why = b.get("baselines_error")
        return [f"baselines: n/a ({why})"] if why else []
    base = ", ".join(f"{k} {_num(v['cv_r2'])}" for k, v in sorted(b["baselines"].items()))
    lines = [f"baselines (CV R², same folds): {base}",
             f"skill vs climatology (1 - MSE/MSE_clim): {_num(b.get('skill_vs_climatology'))}; "
             f"anomaly R² (observed - climatology): {_num(b.get('anomaly_r2'))}"]
    sb = b.get("site_baselines") or {}
    for site, r2 in (b.get("site_r2") or {}).items():
        beside = ", ".join(f"{k} {_num(v.get(site))}" for k, v in sorted(sb.items()))
        lines.append(f"{site}: R² {_num(r2)}" + (f" ({beside})" if beside else ""))
    return lines


def _dashboard_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)


def dashboard(args: argparse.Namespace) -> int:
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    from dlfm_auto.study._storage import open_storage

    _check_port_free(args.host, args.port)
    storage = open_storage(args.storage, heartbeat=False, must_exist=True)
    art = args.artifact_dir or args.storage.artifacts_dir
    store = FileSystemArtifactStore(art) if Path(art).exists() else None
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ for {args.storage.display} "
          "(Ctrl-C to stop)")
    run_server(storage, host=args.host, port=args.port, artifact_store=store)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Bind (host, port) once, as the server will, so a busy or invalid port is a one-line
    error before anything is printed (the server itself fails after "Listening on ...")."""
    import socket

    from dlfm_auto.data._config import Interval, describe_rule, rule_allows

    rule = Interval(int, 1, 65535)
    if not rule_allows(rule, port):
        raise UserError(f"invalid port={port}: must be {describe_rule(rule)}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"invalid host={host!r}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as wsgiref's server does
        try:
            s.bind(addr)
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e} (is another "
                            "dashboard running? pass --port N)") from None


def _note(study: optuna.Study, b: dict, lines: list[str]) -> None:
    """The study's settings, then its skill and baselines, as the dashboard note."""
    from dlfm_auto.study._create import load_spec
    from dlfm_auto.study._notes import save_study_note

    try:
        spec = load_spec(study)
    except UserError:
        return
    save_study_note(study, spec, f"## Study summary\n\nbest trial #{b['number']}: CV R² "
                                 f"{b['value']:.4f}\n\n" + "\n".join(f"- {x}" for x in lines)
                    + "\n")


def _print_summary(storage: optuna.storages.BaseStorage, url: StorageURL, name: str,
                   seconds: float, artifacts: str,
                   first_new: int, report_errors: bool) -> int:
    """The end-of-run table; the first failure of this run (one line); the exit code."""
    import optuna
    from optuna.trial import TrialState
    from rich.console import Console
    from rich.table import Table

    from dlfm_auto.study._progress import study_summary
    from dlfm_auto.study._worker import failure_line

    study = optuna.load_study(study_name=name, storage=storage)
    s = study_summary(study, skill=True)
    c = s["counts"]
    new = [t for t in study.get_trials(deepcopy=False) if t.number >= first_new]
    bad = [t for t in new if t.state == TrialState.FAIL and "error" in t.user_attrs
           or "infeasible" in t.user_attrs]
    infeasible = sum("infeasible" in t.user_attrs for t in study.get_trials(deepcopy=False))
    t = Table(title=f"study {name}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("trials", f"{c['complete']} complete, {c['pruned']} pruned"
                        + (f" ({infeasible} infeasible)" if infeasible else "")
                        + f", {c['fail']} failed, {c['running']} running, {c['waiting']} queued")
    if "best" in s:
        b = s["best"]
        sd = b.get("cv_r2_sd") or 0.0
        score = (s.get("user_attrs", {}).get(SPEC_ATTR) or {}).get("cv_score", "mean")
        t.add_row("best CV R²" + ("" if score == "mean" else f" ({score})"),
                  f"{b['value']:.4f} ± {sd:.4f} (trial #{b['number']}, "
                  f"{len(b.get('fold_r2') or [])} folds)")
        if b.get("site_r2"):
            t.add_row("sites", f"median R² {_num(b.get('median_site_r2'))}, pooled R² "
                               f"{_num(b.get('pooled_r2'))}")
        t.add_row("best params", ", ".join(f"{k}={v}" for k, v in sorted(b["params"].items())))
        lines = skill_lines(b)
        for line in lines:
            head, _, rest = line.partition(": ")
            t.add_row(head, rest)
        _note(study, b, lines)
    t.add_row("wall time", f"{seconds:.1f} s")
    t.add_row("stored in", url.display)
    t.add_row("models", artifacts)
    t.add_row("dashboard", f"optuna-dashboard {url.display} --artifact-dir {artifacts}"
                           f"   (or: python -m dlfm_auto dashboard)")
    Console(width=140).print(t)
    if bad and report_errors:  # one worker printed it as it happened otherwise
        print(f"error: {failure_line(bad[0])}", file=sys.stderr)
    finished = [t for t in new if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                and "infeasible" not in t.user_attrs]
    if new and not finished and bad:
        print(f"error: this run finished no trial ({len(bad)} failed or infeasible)",
              file=sys.stderr)
        return 1
    return 0


_STORE = (storage_parent, artifacts_parent)

#: The study verbs, each parser beside its handler (``dlfm_auto.cli`` lists them).
VERBS = (
    Verb("run-study", "create or resume a study and run its trials", _run_study_options,
         run_study, parents=(data_parent, *_STORE)),
    Verb("worker", "join an existing study and run trials until it is done", _worker_options,
         worker, parents=_STORE),
    Verb("studies", "list the studies in a storage", _no_options, studies, parents=_STORE),
    Verb("best", "print the best trial of a study", _best_options, best, parents=_STORE),
    Verb("dashboard", "open optuna-dashboard on the study storage", _dashboard_options,
         dashboard, parents=_STORE),
)

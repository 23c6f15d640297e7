"""``report final|memory|variables``.

Options are validated by the reports themselves (``reports._options``: one rules table) before
any work; every report writes ``<out>/<study>/<kind>/`` and the study's ``index.html``.
"""

from __future__ import annotations

import argparse

from dlfm_auto import cli
from dlfm_auto._errors import UserError
from dlfm_auto._urls import DEFAULT_STORAGE
from dlfm_auto.reports._compare_cli import add_leaderboard_parser, leaderboard_cmd


def _extend(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a report under reports/")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    f = kinds.add_parser("final", help="retrain the best parameters, evaluate held-out years")
    f.add_argument("study_name")
    f.add_argument("--num-models", type=int, default=5)
    _common(f)

    m = kinds.add_parser("memory", help="skill vs input sequence length (matched samples)")
    m.add_argument("family", nargs="?", help="model family (default: the --study-name study's)")
    m.add_argument("--study-name", help="take the family, data, settings and best parameters "
                                        "from this study; the report goes to reports/STUDY/memory")
    cli.add_data_args(m, default_data=None)
    m.add_argument("--sequence-lengths", type=cli._csv_ints,
                   help="comma list of L in days (default: 1,3,7,14,30,60,90,120)")
    m.add_argument("--num-models", type=int, default=3)
    m.add_argument("--params", default="best",
                   help="best (the --study-name study, else the FAMILY-SITE study), a study "
                        "name, or k=v,k=v")
    m.add_argument("--max-epochs", type=int)
    m.add_argument("--n-jobs", type=int, default=1)
    _common(m, data=False)

    v = kinds.add_parser("variables", help="sensitivity by driver and lag")
    v.add_argument("study_name")
    v.add_argument("--lags", help="0..L or a list 0,1,7 (default: the whole window)")
    v.add_argument("--artifact-dir")
    _common(v)

    add_leaderboard_parser(kinds)


def _common(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE)
    p.add_argument("--out", default="reports", help="reports folder")
    if data:
        p.add_argument("--data", help="the study's data file, if it moved (checked by hash)")


cli._EXTENSIONS.append(_extend)


@cli.verb("report")
def report(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.kind == "final":
        from dlfm_auto.reports._final import final_report

        dest = final_report(args.storage, args.study_name, num_models=args.num_models,
                            out_root=Path(args.out), data=args.data)
    elif args.kind == "memory":
        from dlfm_auto.reports._memory import memory_report

        prep = None
        if args.study_name is None:
            prep = cli.config_from_args(args)
        else:
            given = [f"--{f.replace('_', '-')}" for f in (*cli._CFG_FIELDS, "columns")
                     if f != "data" and getattr(args, f, None) is not None]
            if given:
                raise UserError(f"report memory --study-name takes the data settings from the "
                                f"study: drop {', '.join(given)} (--data only for a moved file)")
        dest = memory_report(args.storage, args.family, prep,
                             lengths=args.sequence_lengths, num_models=args.num_models,
                             params_source=args.params, max_epochs=args.max_epochs,
                             out_root=Path(args.out), n_jobs=args.n_jobs,
                             study_name=args.study_name, data=args.data)
    elif args.kind == "leaderboard":
        dest = leaderboard_cmd(args)
    else:
        from dlfm_auto.reports._variables import variables_report

        dest = variables_report(args.storage, args.study_name, lags=args.lags,
                                out_root=Path(args.out), data=args.data,
                                artifacts_dir=args.artifact_dir)
    print(f"report written to {dest}/ (index.html, report.md, metrics.json, PNG figures)")
    return 0

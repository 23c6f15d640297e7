"""``report final|memory|variables``.

Options are validated by the reports themselves (``reports._options``: one rules table) before
any work; every report writes ``<out>/<study>/<kind>/`` and the study's ``index.html``.
"""

from __future__ import annotations

import argparse

from dlfm_auto._arguments import Verb, artifacts_parent, csv_ints, storage_parent
from dlfm_auto._errors import UserError
from dlfm_auto.data._arguments import add_moved_data, config_from_args, data_parent, given_data_options
from dlfm_auto.reports import _compare_cli as compare_cli
from dlfm_auto.reports._options import DEFAULT_LENGTHS


def _report_options(p: argparse.ArgumentParser) -> None:
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", default="reports", help="reports folder")
    moved = argparse.ArgumentParser(add_help=False)
    add_moved_data(moved)
    common = [storage_parent(), out]

    f = kinds.add_parser("final", help="retrain the best parameters, evaluate held-out years",
                         parents=[*common, moved])
    f.add_argument("study_name")
    f.add_argument("--num-models", type=int, default=5)

    m = kinds.add_parser("memory", help="skill vs input sequence length (matched samples)",
                         parents=[data_parent(None), *common])
    m.add_argument("family", nargs="?", help="model family (default: the --study-name study's)")
    m.add_argument("--study-name", help="take the family, data, settings and best parameters "
                                        "from this study; the report goes to reports/STUDY/memory")
    m.add_argument("--sequence-lengths", type=csv_ints,
                   help="comma list of L in days (default: "
                        f"{','.join(map(str, DEFAULT_LENGTHS))})")
    m.add_argument("--num-models", type=int, default=3)
    m.add_argument("--params", default="best",
                   help="best (the --study-name study, else the FAMILY-SITE study), a study "
                        "name, or k=v,k=v")
    m.add_argument("--max-epochs", type=int)
    m.add_argument("--n-jobs", type=int, default=1)

    v = kinds.add_parser("variables", help="sensitivity by driver and lag",
                         parents=[*common, moved, artifacts_parent()])
    v.add_argument("study_name")
    v.add_argument("--lags", help="0..L or a list 0,1,7 (default: the whole window)")

    compare_cli.add_leaderboard_parser(kinds)


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
            prep = config_from_args(args)
        else:
            given = given_data_options(args, skip=("data",))
            if given:
                raise UserError(f"report memory --study-name takes the data settings from the "
                                f"study: drop {', '.join(given)} (--data only for a moved file)")
        dest = memory_report(args.storage, args.family, prep,
                             lengths=args.sequence_lengths, num_models=args.num_models,
                             params_source=args.params, max_epochs=args.max_epochs,
                             out_root=Path(args.out), n_jobs=args.n_jobs,
                             study_name=args.study_name, data=args.data)
    elif args.kind == "leaderboard":
        dest = compare_cli.leaderboard_cmd(args)
    else:
        from dlfm_auto.reports._variables import variables_report

        dest = variables_report(args.storage, args.study_name, lags=args.lags,
                                out_root=Path(args.out), data=args.data,
                                artifacts_dir=args.artifact_dir)
    print(f"report written to {dest}/ (index.html, report.md, metrics.json, PNG figures)")
    return 0


#: The report verb (``dlfm_auto.cli`` lists it); its kinds are sub-verbs.
VERBS = (Verb("report", "write a report under reports/", _report_options, report),
         *compare_cli.VERBS)

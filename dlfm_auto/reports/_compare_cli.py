"""Verbs that compare and export: ``report leaderboard`` and ``predict``.

Parsers beside their handlers; ``reports._cli`` adds the leaderboard kind with
:func:`add_leaderboard_parser` / :func:`leaderboard_cmd` and lists :data:`VERBS` (``predict``)
in the CLI's verb table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlfm_auto._arguments import Verb, storage_parent
from dlfm_auto._errors import UserError


def add_leaderboard_parser(kinds: argparse._SubParsersAction) -> None:
    """``report leaderboard [--site SITE] [--storage URL] [--out DIR]``."""
    p = kinds.add_parser("leaderboard", help="every study (or every study of a site) side by "
                                             "side with the baselines",
                          parents=[storage_parent()])
    p.add_argument("--site", help="only the studies of this site (as `studies` lists it)")
    p.add_argument("--out", default="reports", help="reports folder (also where the final "
                                                    "reports' held-out R² is read)")


def leaderboard_cmd(args: argparse.Namespace) -> Path:
    from dlfm_auto.reports._leaderboard import leaderboard_report

    return leaderboard_report(args.storage, site=args.site, out_root=Path(args.out))


def _predict_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name")
    p.add_argument("--data", required=True, help="flux file with the study's drivers and "
                                                 "target column (empty where NEE is missing)")
    p.add_argument("--out", required=True, help="CSV to write (date, observed, predicted, "
                                                "predicted_sd, climatology)")
    p.add_argument("--reports", default="reports",
                   help="reports folder holding STUDY/final/ensemble.pt (default reports)")


def predict_cmd(args: argparse.Namespace) -> int:
    from dlfm_auto._io import atomic_write_text, check_output_file
    from dlfm_auto.reports._predict import load_ensemble

    check_output_file(args.out, "--out")
    if Path(args.data).exists() and Path(args.out).resolve() == Path(args.data).resolve():
        raise UserError(f"--out {args.out} is the data file itself: give another file name")
    ens = load_ensemble(args.study_name, args.reports)
    frame = ens.predict_file(args.data)
    if frame.empty:
        raise UserError(f"{args.data}: no day has a complete {ens.sequence_length}-day window "
                        f"of the drivers {', '.join(ens.inputs)}")
    atomic_write_text(args.out, frame.to_csv(index=False, float_format="%.6g"))
    gaps = int(frame["observed"].isna().sum())
    print(f"{len(frame)} days predicted ({frame['date'].iloc[0]} to {frame['date'].iloc[-1]}; "
          f"{gaps} without observed NEE, gap-filled) by the {len(ens.models)}-model "
          f"{ens.family} ensemble of study {args.study_name!r}; written to {args.out}",
          file=sys.stdout)
    return 0


#: Verbs of this module for the CLI's table (``report leaderboard`` is a kind of ``report``).
VERBS = (Verb("predict", "daily NEE of a file from a study's final ensemble (gap-filling: also "
              "days without observed NEE)", _predict_options, predict_cmd),)

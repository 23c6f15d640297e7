"""Command line: one subcommand per verb (``python -m dlfm_auto VERB ...``).

User mistakes (:class:`UserError`) print one line and exit 2; Ctrl-C exits 130 after the
verb has saved what it had. :data:`VERBS` is the one table of verbs: each verb's parser beside
its handler (study and report verbs live in their packages). Handlers import their heavy
modules lazily.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from dlfm_auto._arguments import Verb
from dlfm_auto._errors import UserError
from dlfm_auto._io import check_output_file
from dlfm_auto.data._arguments import config_from_args, data_parent
from dlfm_auto.data._config import DEFAULT_DATA, PrepareConfig
from dlfm_auto.reports import _cli as reports_cli
from dlfm_auto.study import _cli as study_cli


def _prepare_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="write the daily table (CSV) here")


def _prepare(args: argparse.Namespace) -> int:
    from dlfm_auto._io import atomic_write_text
    from dlfm_auto.data import load_daily, prepare

    cfg = config_from_args(args)
    if args.out:
        check_output_file(args.out, "--out")
        if any(p.exists() and Path(args.out).resolve() == p.resolve() for p in cfg.paths):
            raise UserError(f"--out {args.out} is the data file itself: give another file name")
    if cfg.multi_site:
        return _prepare_sites(cfg, args.out)
    # The filter report first: when the split plan fails, it shows what removed the days.
    table, report, src = load_daily(cfg)
    _print_source(src, report, f", site {src.site or '?'}")
    ds = prepare(cfg)
    per_year = ds.samples_per_year()
    print(f"samples at sequence_length={ds.sequence_length}: {len(ds.y)} "
          f"({', '.join(f'{y}: {n}' for y, n in per_year.items())})")
    print(f"held-out evaluation years: {', '.join(map(str, ds.eval_years)) or 'none'}")
    print(f"folds possible: {len(ds.fold_years)} (validation years, newest first: "
          f"{', '.join(map(str, ds.fold_years))}); using {min(cfg.folds, len(ds.fold_years))}")
    for m in ds.messages:
        print(f"note: {m}")
    if args.out:
        t = ds.table.copy()
        t.index = t.index.strftime("%Y-%m-%d")
        atomic_write_text(args.out, t.to_csv(index_label="DAY", float_format="%.10g"))
        print(f"daily table written to {args.out}")
    return 0


def _print_source(src: Any, report: Any, extra: str = "") -> None:
    """A file's format, target, inputs and filter report, as ``prepare`` prints them."""
    print(f"file: {src.path} ({src.format}, {src.step_minutes}-min{extra})")
    print(f"target: {src.target} ({src.target_source})")
    print(f"inputs: {', '.join(src.inputs)} ({src.inputs_source})")
    for line in report.lines():
        print(line)
    sys.stdout.flush()


def _prepare_sites(cfg: PrepareConfig, out: str | None) -> int:
    """``prepare --data F1 F2 ...``: each site's file, target, inputs and filter report (in
    --data order, before the pooling can fail), then the pooled folds and held-out years."""
    import numpy as np
    import pandas as pd

    from dlfm_auto._io import atomic_write_text
    from dlfm_auto.data import load_daily, prepare

    for path in cfg.paths:
        try:
            _, report, src = load_daily(cfg.single_site(path))
        except UserError as e:  # the same wording as the pooling's own error
            raise UserError(f"site file {path.name}: {e}") from None
        print(f"== site {src.site or path.name.split('.')[0]}")
        _print_source(src, report)
    ds = prepare(cfg)
    print(f"== pooled: {len(ds.site_names)} sites, inputs {', '.join(ds.source.inputs)}")
    counts = np.bincount(ds.site, minlength=len(ds.site_names))
    for i, name in enumerate(ds.site_names):
        years = ds.site_eval_years.get(name, ())
        print(f"{name}: {int(counts[i])} samples at sequence_length={ds.sequence_length}; "
              f"held-out evaluation years: {', '.join(map(str, years)) or 'none'}")
    folds = ds.folds()
    what = ("leave one site out" if cfg.cv == "sites" else
            "season years pooled over sites, newest first")
    print(f"folds ({cfg.cv}: {what}): {len(folds)}: "
          + ", ".join(f"{label} ({int(m.sum())} samples)" for label, m in folds))
    for m in ds.messages:
        print(f"note: {m}")
    if out:
        t = ds.table.reset_index()
        t["DAY"] = pd.DatetimeIndex(t["DAY"]).strftime("%Y-%m-%d")
        atomic_write_text(out, t.to_csv(index=False, float_format="%.10g"))
        print(f"daily table of every site written to {out}")
    return 0


def _demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_DATA)
    p.add_argument("--years", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)


def _demo(args: argparse.Namespace) -> int:
    from dlfm_auto.data import write_demo_site

    check_output_file(args.out, "--out")
    path = write_demo_site(args.out, years=args.years, seed=args.seed)
    print(f"SYNTHETIC demo site ({args.years} years, seed {args.seed}) written to {path}")
    print("it is not real data: use it to try the tool, then pass --data YOUR_FILE")
    return 0


#: The one table of verbs, in the order ``--help`` lists them.
VERBS: dict[str, Verb] = {v.name: v for v in (
    Verb("prepare", "build the daily table and print the filter report", _prepare_options,
         _prepare, parents=(data_parent,)),
    Verb("demo-data", "write a SYNTHETIC demo site (AmeriFlux BASE format)", _demo_options,
         _demo),
    *study_cli.VERBS,
    *reports_cli.VERBS,
)}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad option is ``error: ...`` on one line and exit 2,
    like every other user mistake (argparse prints its whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        from dlfm_auto._urls import mask_secrets

        self.exit(2, f"error: {self.prog}: {mask_secrets(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m dlfm_auto",
        description="Optuna-driven AutoML studies for daily NEE from flux-tower data.",
    )
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for v in VERBS.values():
        v.build(sub.add_parser(v.name, help=v.help, parents=[make() for make in v.parents]))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # a type check (e.g. a storage URL) may raise UserError
        return VERBS[args.verb].run(args)
    except UserError as e:
        from dlfm_auto._urls import mask_secrets  # a password is never printed (last guard)

        print(f"error: {mask_secrets(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: everything finished so far is saved", file=sys.stderr)
        return 130

"""Command line: one subcommand per verb (``python -m dlfm_auto VERB ...``).

User mistakes (:class:`UserError`) print one line and exit 2; Ctrl-C exits 130 after the
verb has saved what it had. Verbs import their heavy modules lazily so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dlfm_auto._errors import UserError
from dlfm_auto._io import check_output_file

_VERBS: dict[str, Callable[[argparse.Namespace], int]] = {}


def verb(name: str) -> Callable:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable:
        _VERBS[name] = fn
        return fn

    return deco


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from None


def add_data_args(p: argparse.ArgumentParser, default_data: str | None = "data/data.csv") -> None:
    """Options that define the samples; shared by prepare, run-study, worker and reports."""
    g = p.add_argument_group("data")
    g.add_argument("--data", default=default_data, help="flux file (CSV or .csv.gz)")
    g.add_argument("--target", help="target column (default: first of NEE_PI, NEE_PI_F, NEE, FC)")
    g.add_argument("--columns", nargs="+", metavar="COL", help="input columns, named exactly")
    g.add_argument("--sequence-length", type=int, help="days per input window (L)")
    g.add_argument("--eval-years", type=int, help="held-out last season years (default 3)")
    g.add_argument("--folds", type=int, help="leave-one-year-out folds (default 3)")
    g.add_argument("--ustar-mode", choices=["na", "drop", "drop-record", "off"],
                   help="drop-record: DLFM's drop (low-USTAR records leave every column)")
    g.add_argument("--ustar-threshold", type=float)
    g.add_argument("--min-count", type=int, help="valid daylight half-hours per input per day")
    g.add_argument("--nee-mode", choices=["daylight", "peak"])
    g.add_argument("--season-start-month", type=int)
    g.add_argument("--snow-season", choices=["any-record", "dlfm"],
                   help="season years from D_SNOW: any-record (default) or the DLFM rule")
    g.add_argument("--dd-qc-min", type=float,
                   help="FLUXNET daily files: NEE with <target>_QC below this is missing (0.5)")
    g.add_argument("--doy", action="store_true", default=None, help="add day of year as input")
    g.add_argument("--stats-window", type=int, help="add rolling mean/var over N days")
    g.add_argument("--lag-nee", action="store_true", default=None,
                   help="nowcasting: feed yesterday's observed NEE as an input (the model "
                        "then needs measured NEE up to the day before; not a forecast from "
                        "weather alone). Adds the persistence baseline")
    g.add_argument("--min-val-samples", type=int, help="minimum samples in a fold's year")
    g.add_argument("--window-gap-days", type=int,
                   help="inside a window, interpolate driver gaps of up to N missing days "
                        "(default 3; the target day is always a measured day; 0: DLFM)")


_CFG_FIELDS = (
    "data", "target", "sequence_length", "eval_years", "folds", "ustar_mode", "ustar_threshold",
    "min_count", "nee_mode", "season_start_month", "doy", "stats_window", "lag_nee",
    "window_gap_days",
    "min_val_samples", "snow_season", "dd_qc_min",
)


def config_from_args(args: argparse.Namespace, **overrides):
    """A PrepareConfig from the data options that were given (unset ones keep defaults)."""
    from dlfm_auto.data import PrepareConfig

    kw = {f: getattr(args, f) for f in _CFG_FIELDS if getattr(args, f, None) is not None}
    if getattr(args, "columns", None):
        kw["columns"] = tuple(args.columns)
    kw.update(overrides)
    return PrepareConfig(**kw)


@verb("prepare")
def _prepare(args: argparse.Namespace) -> int:
    from dlfm_auto._io import atomic_write_text
    from dlfm_auto.data import load_daily, prepare

    cfg = config_from_args(args)
    if args.out:
        check_output_file(args.out, "--out")
        if cfg.path.exists() and Path(args.out).resolve() == cfg.path.resolve():
            raise UserError(f"--out {args.out} is the data file itself: give another file name")
    # The filter report first: when the split plan fails, it shows what removed the days.
    table, report, src = load_daily(cfg)
    print(f"file: {src.path} ({src.format}, {src.step_minutes}-min, site {src.site or '?'})")
    print(f"target: {src.target} ({src.target_source})")
    print(f"inputs: {', '.join(src.inputs)} ({src.inputs_source})")
    for line in report.lines():
        print(line)
    sys.stdout.flush()
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


@verb("demo-data")
def _demo(args: argparse.Namespace) -> int:
    from dlfm_auto.data import write_demo_site

    check_output_file(args.out, "--out")
    path = write_demo_site(args.out, years=args.years, seed=args.seed)
    print(f"SYNTHETIC demo site ({args.years} years, seed {args.seed}) written to {path}")
    print("it is not real data: use it to try the tool, then pass --data YOUR_FILE")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dlfm_auto",
        description="Optuna-driven AutoML studies for daily NEE from flux-tower data.",
    )
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    sp = sub.add_parser("prepare", help="build the daily table and print the filter report")
    add_data_args(sp)
    sp.add_argument("--out", help="write the daily table (CSV) here")

    sp = sub.add_parser("demo-data", help="write a SYNTHETIC demo site (AmeriFlux BASE format)")
    sp.add_argument("--out", default="data/data.csv")
    sp.add_argument("--years", type=int, default=6)
    sp.add_argument("--seed", type=int, default=0)

    for extend in _EXTENSIONS:
        extend(sub)
    return p


#: Other modules add their verbs' parsers here (keeps this file about dispatch only).
_EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    _load_verbs()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _VERBS[args.verb](args)
    except UserError as e:
        from dlfm_auto._urls import mask_secrets  # a password is never printed (last guard)

        print(f"error: {mask_secrets(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: everything finished so far is saved", file=sys.stderr)
        return 130


def _load_verbs() -> None:
    """Import the modules that register more verbs (study, reports)."""
    import importlib

    for mod in ("dlfm_auto.study._cli", "dlfm_auto.reports._cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not e.name.startswith(mod.rsplit(".", 1)[0]):
                raise

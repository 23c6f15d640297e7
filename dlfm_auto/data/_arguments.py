"""The data options of the command line, generated from :class:`PrepareConfig`.

Each option is a field of ``PrepareConfig``; its type comes from the field, its choices from the
constraint table (:data:`CONSTRAINTS`), so the command line and the validation cannot drift
apart. Only the help texts are written here. Options left unset keep the config's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from dlfm_auto.data._config import CONSTRAINTS, DEFAULT_DATA, PrepareConfig

#: The settings offered as options (``--sequence-length`` for ``sequence_length``), with help.
OPTION_HELP: dict[str, str | None] = {
    "data": "flux file (CSV or .csv.gz); several files, one per site, make a multi-site study",
    "target": "target column (default: first of NEE_PI, NEE_PI_F, NEE, FC)",
    "columns": "input columns, named exactly",
    "sequence_length": "days per input window (L)",
    "eval_years": "held-out last season years (default 3)",
    "folds": "leave-one-year-out folds (default 3)",
    "ustar_mode": "drop-record: DLFM's drop (low-USTAR records leave every column)",
    "ustar_threshold": None,
    "min_count": "valid daylight half-hours per input per day",
    "nee_mode": None,
    "season_start_month": None,
    "snow_season": "season years from D_SNOW: any-record (default) or the DLFM rule",
    "dd_qc_min": "FLUXNET daily files: NEE with <target>_QC below this is missing (0.5)",
    "doy": "add day of year as input",
    "stats_window": "add rolling mean/var over N days",
    "lag_nee": "nowcasting: feed yesterday's observed NEE as an input (the model then needs "
               "measured NEE up to the day before; not a forecast from weather alone). Adds "
               "the persistence baseline",
    "min_val_samples": "minimum samples in a fold's year",
    "window_gap_days": "inside a window, interpolate driver gaps of up to N missing days "
                       "(default 3; the target day is always a measured day; 0: DLFM)",
    "cv": "several sites: years (season-year folds pooled over sites, default) or sites "
          "(leave one whole site out; every site is a fold, --folds is not used)",
    "site_info": "several sites: CSV with a 'site' column plus static site features "
                 "(numeric, or categorical such as IGBP), given to the models",
    "site_norm": "several sites: standardise each site's drivers with that site's own "
                 "training-year driver statistics (never its NEE)",
}


class Files(argparse.Action):
    """``--data F`` keeps a plain path; ``--data F1 F2 ...`` a tuple (several sites)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        setattr(namespace, self.dest, values[0] if len(values) == 1 else tuple(values))

_TYPES = {"int": int, "float": float, "str": str}


def add_moved_data(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--data``: local copies of a study's files when they moved (checked by hash)."""
    p.add_argument("--data", nargs="+", action=Files, metavar="FILE",
                   help="the study's data file(s), if they moved: one per site, in the "
                        "study's order (checked by hash)")


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _add(g: argparse._ArgumentGroup, f: dataclasses.Field, default_data: str | None) -> None:
    name, help_ = f.name, OPTION_HELP[f.name]
    kind = str(f.type).split(" | ")[0]  # "int | None" -> "int"
    if name == "data":
        g.add_argument("--data", default=default_data, nargs="+", action=Files,
                       metavar="FILE", help=help_)
    elif name == "columns":
        g.add_argument("--columns", nargs="+", metavar="COL", help=help_)
    elif kind == "bool":
        g.add_argument(option_name(name), action="store_true", default=None, help=help_)
    else:
        rule = CONSTRAINTS.get(name)
        choices = sorted(rule) if isinstance(rule, set) else None
        g.add_argument(option_name(name), type=_TYPES[kind], choices=choices, help=help_)


def data_parent(default_data: str | None = DEFAULT_DATA) -> argparse.ArgumentParser:
    """Options that define the samples; shared by prepare, run-study and report memory."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("data")
    fields = {f.name: f for f in dataclasses.fields(PrepareConfig)}
    for name in OPTION_HELP:
        _add(g, fields[name], default_data)
    return p


def given_data_options(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> list[str]:
    """The data options set on the command line (as ``--name``), in table order."""
    return [option_name(f) for f in OPTION_HELP
            if f not in skip and getattr(args, f, None) is not None]


def config_from_args(args: argparse.Namespace, **overrides: Any) -> PrepareConfig:
    """A PrepareConfig from the data options that were given (unset ones keep defaults)."""
    kw = {f: getattr(args, f) for f in OPTION_HELP if getattr(args, f, None) is not None}
    if "columns" in kw:
        kw["columns"] = tuple(kw["columns"])
    kw.update(overrides)
    return PrepareConfig(**kw)

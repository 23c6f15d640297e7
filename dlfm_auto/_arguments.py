"""Command-line building blocks shared by every verb (the lowest layer: argparse only).

A verb is its parser beside its handler (:class:`Verb`); ``dlfm_auto.cli`` holds the one table
of verbs. Options that several verbs share come from parent parsers made here (storage) or in
:mod:`dlfm_auto.data._arguments` (data settings, generated from ``PrepareConfig``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

from dlfm_auto._urls import DEFAULT_STORAGE, StorageURL


@dataclass(frozen=True)
class Verb:
    """One subcommand: ``build`` adds its options to its parser, ``run`` does the work and
    returns the exit code. ``parents``: shared option groups (parent parsers)."""

    name: str
    help: str
    build: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    parents: tuple[Callable[[], argparse.ArgumentParser], ...] = ()


def csv_ints(text: str) -> tuple[int, ...]:
    """argparse type: ``1,3,7`` as a tuple of integers."""
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from None


def count(minimum: int, what: str) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum``; the message names the allowed values."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < minimum:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: must be an integer >= "
                                             f"{minimum}")
        return v

    return parse


def seconds(text: str) -> float:
    """argparse type for --timeout: a positive number of seconds."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: must be a number of "
                                         "seconds > 0")
    return v


def storage_parent() -> argparse.ArgumentParser:
    """``--storage``: where the studies live (every verb that reads or writes a study), parsed
    here, at the edge, into a :class:`StorageURL`.

    Parent parsers are built fresh for each parser: argparse shares their option objects with
    the child, and ``run-study --config`` moves its options' defaults aside (a cached parent
    would carry that into every later parser).
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--storage", type=StorageURL.parse, default=StorageURL.parse(DEFAULT_STORAGE),
                   help=f"Optuna storage URL (default {DEFAULT_STORAGE}; PostgreSQL: "
                        "postgresql+psycopg://user@host/db; journal file: journal:///path)")
    return p


def artifacts_parent() -> argparse.ArgumentParser:
    """``--artifact-dir``: the model artifacts folder of a storage."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--artifact-dir", help="model artifacts folder (default: beside the database)")
    return p

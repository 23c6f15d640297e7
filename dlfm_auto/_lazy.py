"""Lazy package exports (PEP 562): a package names what it exports, a module imports on use.

The command line builds its parsers from light modules only; a package whose ``__init__``
imported its heavy modules (pandas, optuna, torch) would make ``--help`` pay for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(exports: dict[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``{module path: names}``: a name's module is imported on
    its first use."""
    home = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in home:
            return getattr(importlib.import_module(home[name]), name)
        raise AttributeError(name)

    return __getattr__

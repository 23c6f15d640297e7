"""Reading flux files -> daily samples -> windows and year folds.

Names are imported lazily (PEP 562) so that the command line, which builds its data options
from :mod:`dlfm_auto.data._config`, does not pay for pandas and scipy on ``--help``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_DRIVERS": "dlfm_auto.data._columns",
    "TARGET_CANDIDATES": "dlfm_auto.data._columns",
    "PrepareConfig": "dlfm_auto.data._config",
    "FilterReport": "dlfm_auto.data._daily",
    "Dataset": "dlfm_auto.data._dataset",
    "SourceInfo": "dlfm_auto.data._dataset",
    "min_val_samples": "dlfm_auto.data._dataset",
    "write_demo_site": "dlfm_auto.data._demo",
    "cache_dir": "dlfm_auto.data._prepare",
    "clear_caches": "dlfm_auto.data._prepare",
    "load_daily": "dlfm_auto.data._prepare",
    "prepare": "dlfm_auto.data._prepare",
    "Normalizer": "dlfm_auto.data._split",
    "Split": "dlfm_auto.data._split",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)

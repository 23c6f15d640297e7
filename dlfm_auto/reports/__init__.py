"""Reports (final, memory, variables, leaderboard) and predictions from a final ensemble.

``load_ensemble(study, reports_dir="reports")`` returns the :class:`Ensemble` that
``report final`` trained; ``Ensemble.predict(daily_table)`` / ``predict_file(path)`` give
daily NEE (see :mod:`dlfm_auto.reports._predict`). Imported lazily: the CLI stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Ensemble": "dlfm_auto.training._ensemble",
    "ensemble_path": "dlfm_auto.reports._predict",
    "load_ensemble": "dlfm_auto.reports._predict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)

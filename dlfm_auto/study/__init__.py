"""Optuna studies: create/resume, run trials on any storage, inspect, artifacts.

Names are imported lazily so that ``python -m dlfm_auto --help`` and the CLI's argument
parsing do not pay for importing optuna and torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_STORAGE": "dlfm_auto.study._storage",
    "open_storage": "dlfm_auto.study._storage",
    "StudySpec": "dlfm_auto.study._spec",
    "WorkerOptions": "dlfm_auto.study._worker",
    "build_spec": "dlfm_auto.study._create",
    "create_or_resume": "dlfm_auto.study._create",
    "load_spec": "dlfm_auto.study._create",
    "study_summary": "dlfm_auto.study._progress",
    "work": "dlfm_auto.study._worker",
    "load_best_models": "dlfm_auto.study._artifacts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)

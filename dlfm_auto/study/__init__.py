"""Optuna studies: create/resume, run trials on any storage, inspect, artifacts.

Names are imported lazily so that ``python -m dlfm_auto --help`` and the CLI's argument
parsing do not pay for importing optuna and torch.
"""

from __future__ import annotations

from dlfm_auto._lazy import lazy_exports

#: module -> the names it exports here
_EXPORTS = {
    "dlfm_auto.study._storage": ("DEFAULT_STORAGE", "open_storage"),
    "dlfm_auto.study._spec": ("StudySpec",),
    "dlfm_auto.study._worker": ("WorkerOptions", "work"),
    "dlfm_auto.study._create": ("build_spec", "create_or_resume", "load_spec"),
    "dlfm_auto.study._progress": ("study_summary",),
    "dlfm_auto.study._artifacts": ("load_best_models",),
}

__all__ = sorted(n for names in _EXPORTS.values() for n in names)
__getattr__ = lazy_exports(_EXPORTS)

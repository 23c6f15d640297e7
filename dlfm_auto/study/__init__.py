"""Optuna studies: create/resume, run trials on any storage, inspect, artifacts."""

from dlfm_auto.study._artifacts import load_best_models
from dlfm_auto.study._runner import (
    WorkerOptions,
    build_spec,
    create_or_resume,
    load_spec,
    study_summary,
    work,
)
from dlfm_auto.study._spec import StudySpec
from dlfm_auto.study._storage import DEFAULT_STORAGE, open_storage

__all__ = [
    "DEFAULT_STORAGE",
    "StudySpec",
    "WorkerOptions",
    "build_spec",
    "create_or_resume",
    "load_best_models",
    "load_spec",
    "open_storage",
    "study_summary",
    "work",
]

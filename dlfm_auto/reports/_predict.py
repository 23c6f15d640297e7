"""Predictions from a study's final ensemble: the ``predict`` API and verb's engine.

``report final STUDY`` saves the trained ensemble in ``reports/STUDY/final/ensemble.pt``;
:func:`load_ensemble` reads it back and :meth:`Ensemble.predict_file` /
:meth:`Ensemble.predict` give daily NEE for any file / daily table with the study's drivers::

    from dlfm_auto.reports import load_ensemble

    ens = load_ensemble("lstm-US-XXX")                 # reports/lstm-US-XXX/final/ensemble.pt
    frame = ens.predict_file("AMF_US-XXX_BASE_HH_2-5.csv")   # date, observed, predicted, ...
    frame = ens.predict(daily_table)                  # a daily table (index: dates)
"""

from __future__ import annotations

from pathlib import Path

from dlfm_auto._errors import UserError
from dlfm_auto.reports._common import REPORTS_DIR
from dlfm_auto.training._ensemble import Ensemble


def ensemble_path(study_name: str, reports_dir: Path | str = REPORTS_DIR) -> Path:
    """Where ``report final`` keeps the study's ensemble (the name is checked first)."""
    from dlfm_auto.reports._final import ENSEMBLE_FILE
    from dlfm_auto.study._spec import check_study_name

    check_study_name(study_name)
    return Path(reports_dir) / study_name / "final" / ENSEMBLE_FILE


def load_ensemble(study_name: str, reports_dir: Path | str = REPORTS_DIR) -> Ensemble:
    """The study's final ensemble; refuses (UserError) when no final report exists yet."""
    path = ensemble_path(study_name, reports_dir)
    if not path.exists():
        raise UserError(f"no trained ensemble for study {study_name!r} in {path.parent}: run "
                        f"`python -m dlfm_auto report final {study_name}` first")
    return Ensemble.load(path)


__all__ = ["Ensemble", "ensemble_path", "load_ensemble"]

"""Reading flux files -> daily samples -> windows and year folds.

Names are imported lazily (PEP 562) so that the command line, which builds its data options
from :mod:`dlfm_auto.data._config`, does not pay for pandas and scipy on ``--help``.
"""

from __future__ import annotations

from dlfm_auto._lazy import lazy_exports

#: module -> the names it exports here
_EXPORTS = {
    "dlfm_auto.data._columns": ("DEFAULT_DRIVERS", "TARGET_CANDIDATES"),
    "dlfm_auto.data._config": ("PrepareConfig",),
    "dlfm_auto.data._daily": ("FilterReport",),
    "dlfm_auto.data._dataset": ("Dataset", "SourceInfo", "min_val_samples"),
    "dlfm_auto.data._demo": ("write_demo_site",),
    "dlfm_auto.data._prepare": ("cache_dir", "cached_sha256", "clear_caches", "load_daily",
                                "prepare"),
    "dlfm_auto.data._split": ("Normalizer", "Split"),
}

__all__ = sorted(n for names in _EXPORTS.values() for n in names)
__getattr__ = lazy_exports(_EXPORTS)

"""Reading flux files -> daily samples -> windows and year folds."""

from dlfm_auto.data._columns import DEFAULT_DRIVERS, TARGET_CANDIDATES
from dlfm_auto.data._config import PrepareConfig
from dlfm_auto.data._daily import FilterReport
from dlfm_auto.data._dataset import Dataset, SourceInfo, min_val_samples
from dlfm_auto.data._demo import write_demo_site
from dlfm_auto.data._prepare import cache_dir, clear_caches, load_daily, prepare
from dlfm_auto.data._split import Normalizer, Split

__all__ = [
    "DEFAULT_DRIVERS",
    "TARGET_CANDIDATES",
    "Dataset",
    "FilterReport",
    "Normalizer",
    "PrepareConfig",
    "SourceInfo",
    "Split",
    "cache_dir",
    "clear_caches",
    "load_daily",
    "min_val_samples",
    "prepare",
    "write_demo_site",
]

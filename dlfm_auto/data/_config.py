"""Preprocessing settings, validated declaratively.

Every setting that changes the samples lives in :class:`PrepareConfig`, so that a study can
record it (and refuse to resume with different settings) and the caches can key on it. The
constraints table is the single place that says what is allowed: errors name the parameter and
the allowed values, in the manner of scikit-learn's parameter validation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlfm_auto._errors import UserError

#: The data file when none is given (the demo site is written there too).
DEFAULT_DATA = "data/data.csv"


@dataclass(frozen=True)
class Interval:
    """Allowed numeric range (inclusive) for a setting."""

    type: type
    low: float | None
    high: float | None

    def check(self, value: Any) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False  # NaN compares False with every bound: never let it through
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        if self.type is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            return False
        if self.low is not None and value < self.low:
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        lo = "-inf" if self.low is None else self.low
        hi = "inf" if self.high is None else self.high
        return f"a finite {self.type.__name__} in [{lo}, {hi}]"


@dataclass(frozen=True)
class PrepareConfig:
    """How a flux file becomes samples. Defaults follow the DLFM test bed (README: "What a sample
    is")."""

    #: One flux file, or several (one site each: a multi-site study, see ``data/_sites.py``).
    data: str | tuple[str, ...] = DEFAULT_DATA
    target: str | None = None  # None: first of NEE_PI, NEE_PI_F, NEE, FC, NEE_VUT_REF
    columns: tuple[str, ...] | None = None  # None: the documented default drivers present
    # daily aggregation
    ppfd_threshold: float = 4.0  # daylight: PPFD_IN > this (µmol m-2 s-1)
    sw_threshold: float = 2.0  # daylight when the file has no PPFD_IN: SW_IN > this (W m-2)
    min_count: int = 9  # valid daylight records per input per day, in half-hour units
    nee_mode: str = "daylight"  # "daylight" mean, or "peak" (09-11 h) mean
    nee_min_count: int | None = None  # None: 9 (daylight) or 3 (peak), in half-hour units
    ustar_threshold: float = 0.2  # m s-1
    # "na": low-USTAR days get missing NEE (DLFM default); "drop": low-USTAR records leave the
    # NEE mean only; "drop-record": they leave every column (DLFM's "drop"); "off"
    ustar_mode: str = "na"
    interpolate_single_gaps: bool = True
    # season years
    season_from_snow: bool = True  # use D_SNOW when the file has it
    season_start_month: int = 1  # without D_SNOW: season year starts on the 1st of this month
    # "any-record": a year starts after the last spring day with any D_SNOW > 0 record, a
    # snow-free spring on 1 January; "dlfm": DLFM's rule on daily daylight means (README)
    snow_season: str = "any-record"
    # FLUXNET daily (DD) files: NEE of days whose <target>_QC is below this is missing
    dd_qc_min: float = 0.5
    # samples
    sequence_length: int = 1
    match_length: int | None = None  # matched mode: the target days valid at this length
    doy: bool = False
    stats_window: int = 0  # >0: add rolling mean/variance of each driver over this many days
    lag_nee: bool = False  # add yesterday's NEE as an input (nowcasting)
    # Driver gaps of up to this many missing days inside a window are interpolated linearly
    # (never on the target day, never NEE). 0 is the DLFM rule (a window spanning a missing
    # day is no sample); it leaves 2,711 of 5,066 US-UMB days at L=90, winter the fewest.
    window_gap_days: int = 3
    # splits
    eval_years: int = 3
    folds: int = 3
    min_val_samples: int | None = None  # None: DLFM rule 200 - floor(sqrt(80 L))
    # several sites (``data`` holds several files)
    cv: str = "years"  # "years": season-year folds pooled over sites; "sites": leave one site out
    site_info: str | None = None  # CSV: a ``site`` column plus static site features
    site_norm: bool = False  # standardise each site's drivers with its own training-year stats

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # numpy scalars (np.int64(7)) become plain values
            v = getattr(self, f.name)
            if type(v).__module__ == "numpy" and hasattr(v, "item"):
                object.__setattr__(self, f.name, v.item())
        if self.columns is not None and not isinstance(self.columns, tuple):
            object.__setattr__(self, "columns", tuple(self.columns))
        if not isinstance(self.data, str):  # several files; one file stays a plain path
            files = tuple(str(f) for f in self.data)
            object.__setattr__(self, "data", files[0] if len(files) == 1 else files)
        validate(self)

    # Settings that shape the daily table (the expensive part); the rest only shape windows.
    DAILY_FIELDS = (
        "target", "columns", "ppfd_threshold", "sw_threshold", "min_count", "nee_mode",
        "nee_min_count", "ustar_threshold", "ustar_mode", "interpolate_single_gaps",
        "season_from_snow", "season_start_month", "snow_season", "dd_qc_min",
    )

    def daily_key(self) -> tuple:
        return tuple(getattr(self, f) for f in self.DAILY_FIELDS)

    def settings(self) -> dict[str, Any]:
        """JSON-able settings (everything but the data path), for study attributes."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.pop("data")
        d.pop("site_info")  # a path, like data: its content hash is what identifies it
        for name, default in _ADDED_DEFAULTS.items():
            if d[name] == default:  # studies made before the field existed stay identical
                d.pop(name)
        if d["columns"] is not None:
            d["columns"] = list(d["columns"])
        return d

    def replace(self, **changes: Any) -> PrepareConfig:
        return dataclasses.replace(self, **changes)

    @property
    def multi_site(self) -> bool:
        """Several files, one site each (see ``data/_sites.py``)."""
        return isinstance(self.data, tuple)

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(Path(f) for f in self.data) if self.multi_site else (Path(self.data),)

    @property
    def path(self) -> Path:
        if self.multi_site:
            raise TypeError("a multi-site config has several paths: use .paths")
        return Path(self.data)

    def single_site(self, path: str | Path) -> PrepareConfig:
        """The config of one site of a multi-site config: its file, the shared settings."""
        return dataclasses.replace(self, data=str(path), cv="years", site_info=None,
                                   site_norm=False)


#: Fields added after studies were first stored: left out of ``settings()`` at their default,
#: so an old study's identity (which lacks them) still compares equal.
_ADDED_DEFAULTS: dict[str, Any] = {"snow_season": "any-record", "dd_qc_min": 0.5,
                                   "cv": "years", "site_norm": False}

CONSTRAINTS: dict[str, Any] = {
    "ppfd_threshold": Interval(float, 0, None),
    "sw_threshold": Interval(float, 0, None),
    "min_count": Interval(int, 1, 48),
    "nee_mode": {"daylight", "peak"},
    "nee_min_count": [None, Interval(int, 1, 48)],
    "ustar_threshold": Interval(float, 0, None),
    "ustar_mode": {"na", "drop", "drop-record", "off"},
    "season_start_month": Interval(int, 1, 12),
    "snow_season": {"any-record", "dlfm"},
    "dd_qc_min": Interval(float, 0, 1),
    "sequence_length": Interval(int, 1, 366),
    "match_length": [None, Interval(int, 1, 366)],
    "stats_window": Interval(int, 0, 366),
    "window_gap_days": Interval(int, 0, 30),
    "eval_years": Interval(int, 0, 50),
    "folds": Interval(int, 1, 50),
    "min_val_samples": [None, Interval(int, 1, None)],
    "cv": {"years", "sites"},
}


def describe_rule(rule: Any) -> str:
    """What a rule allows, in words (for error messages)."""
    if isinstance(rule, set):
        return "one of " + ", ".join(repr(v) for v in sorted(rule))
    if isinstance(rule, list):
        return " or ".join("None" if r is None else describe_rule(r) for r in rule)
    return str(rule)


def rule_allows(rule: Any, value: Any) -> bool:
    """Whether ``value`` obeys ``rule`` (a set of values, a list of alternatives, None, or an
    object with ``check``)."""
    if rule is None:
        return value is None
    if isinstance(rule, set):
        return value in rule
    if isinstance(rule, list):
        return any(rule_allows(r, value) for r in rule)
    return rule.check(value)


def validate(cfg: PrepareConfig) -> None:
    """Raise UserError naming the first invalid setting and what is allowed."""
    for name, rule in CONSTRAINTS.items():
        value = getattr(cfg, name)
        if not rule_allows(rule, value):
            raise UserError(f"invalid {name}={value!r}: must be {describe_rule(rule)}")
    if not cfg.multi_site:
        for name, given in (("cv", cfg.cv != "years"), ("site_info", cfg.site_info is not None),
                            ("site_norm", cfg.site_norm)):
            if given:
                raise UserError(f"{name} needs several sites: pass --data with two or more "
                                "files, one per site")
    if cfg.match_length is not None and cfg.match_length < cfg.sequence_length:
        raise UserError(
            f"invalid match_length={cfg.match_length}: must be >= sequence_length "
            f"({cfg.sequence_length})"
        )

"""Physical plausibility ranges per variable family.

A value far outside what the quantity can physically take (TA = 1e6 °C, a negative wind speed)
is a logger or unit error, not a measurement: it is set missing before any averaging, and the
filter report says how many records of each column were outside. The ranges are wide on purpose
(they catch absurd values, not unusual weather) and cover both half-hourly AmeriFlux/FLUXNET
units and FLUXNET daily (DD) means in their own units (P in mm per period, NEE in
µmol m-2 s-1 or gC m-2 d-1), so one table serves both.

Columns are matched by family: the name itself or the name followed by a ``_`` qualifier
(``TA_1_1_1``, ``TA_F_MDS``, ``NEE_VUT_REF``), longest family first (``SW_IN`` before ``SW``).
Quality flags (``*_QC``) are checked against [0, 3] whatever their family.
"""

from __future__ import annotations

import numpy as np

#: family -> (low, high), inclusive, in the file's units.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "TA": (-60.0, 60.0),  # °C
    "TMIN": (-60.0, 60.0),
    "TMAX": (-60.0, 60.0),
    "T_SONIC": (-60.0, 60.0),
    "TS": (-60.0, 80.0),  # °C, soil
    "SW_IN": (-50.0, 1600.0),  # W m-2 (small negative night offsets are normal)
    "SW_OUT": (-50.0, 1200.0),
    "LW_IN": (0.0, 800.0),
    "LW_OUT": (0.0, 1000.0),
    "PPFD_IN": (-50.0, 3000.0),  # µmol m-2 s-1
    "PPFD_OUT": (-50.0, 2000.0),
    "NETRAD": (-500.0, 1200.0),
    "VPD": (-5.0, 120.0),  # hPa
    "RH": (0.0, 110.0),  # %
    "P": (0.0, 1000.0),  # mm per record (daily files: per day)
    "SWC": (0.0, 100.0),  # %
    "USTAR": (0.0, 10.0),  # m s-1
    "WS": (0.0, 75.0),  # m s-1
    "WD": (0.0, 360.0),  # degrees
    "PA": (30.0, 110.0),  # kPa
    "CO2": (100.0, 3000.0),  # µmol mol-1
    "NEE": (-150.0, 150.0),  # µmol m-2 s-1 (DD: gC m-2 d-1, far inside)
    "FC": (-150.0, 150.0),
    "GPP": (-150.0, 150.0),
    "RECO": (-150.0, 150.0),
    "LE": (-1000.0, 1500.0),  # W m-2
    "H": (-1000.0, 1500.0),
    "G": (-500.0, 700.0),
    "D_SNOW": (0.0, 2000.0),  # cm
}

_BY_LENGTH = sorted(PLAUSIBLE, key=len, reverse=True)


def plausible_range(column: str) -> tuple[float, float] | None:
    """The range of ``column``'s family, or None when no family matches (then no check)."""
    if column.endswith("_QC"):
        return (0.0, 3.0)
    for fam in _BY_LENGTH:
        if column == fam or column.startswith(fam + "_"):
            return PLAUSIBLE[fam]
    return None


def mask_implausible(values: dict[str, np.ndarray]) -> dict[str, int]:
    """Set values outside their family's range to NaN, in place; count them per column."""
    out: dict[str, int] = {}
    for name, v in values.items():
        rng = plausible_range(name)
        if rng is None:
            continue
        with np.errstate(invalid="ignore"):
            bad = (v < rng[0]) | (v > rng[1])
        n = int(bad.sum())
        if n:
            v[bad] = np.nan
            out[name] = n
    return out

"""Which columns are the target and the drivers.

Users name columns exactly (``TA_1_1_3`` is not ``TA``); a wrong name is an error that lists
the closest names in the file. Without names, a documented default set is used.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlfm_auto._errors import UserError, close_matches, unknown_name_error

#: Target resolution order when --target is not given (README; FLUXNET's NEE_VUT_REF last).
TARGET_CANDIDATES = ("NEE_PI", "NEE_PI_F", "NEE", "FC", "NEE_VUT_REF")

#: Default drivers: for each, the first alias present in the file is used.
DEFAULT_DRIVERS: dict[str, tuple[str, ...]] = {
    "air temperature": ("TA", "TA_F", "TA_F_MDS", "TA_1_1_1", "TA_PI_F"),
    "shortwave radiation": ("SW_IN", "SW_IN_F", "SW_IN_F_MDS", "SW_IN_1_1_1"),
    "photosynthetic photon flux": ("PPFD_IN", "PPFD_IN_1_1_1"),
    "vapour pressure deficit": ("VPD", "VPD_PI", "VPD_F", "VPD_F_MDS"),
    "precipitation": ("P", "P_F", "P_1_1_1"),
    "soil water content": ("SWC_1_1_1", "SWC_F_MDS_1", "SWC"),
    "soil temperature": ("TS_1_1_1", "TS_F_MDS_1", "TS"),
}

LIGHT_COLUMNS = ("PPFD_IN", "SW_IN")
TIMESTAMP_COLUMNS = ("TIMESTAMP_START", "TIMESTAMP_END", "TIMESTAMP")
USTAR = "USTAR"
SNOW = "D_SNOW"


@dataclass(frozen=True)
class ColumnChoice:
    target: str
    target_source: str  # "explicit" or "default order"
    inputs: tuple[str, ...]
    inputs_source: str  # "explicit" or "default set"


def resolve_columns(
    available: tuple[str, ...], target: str | None, columns: tuple[str, ...] | None
) -> ColumnChoice:
    """Pick the target and input columns, or fail naming the closest existing names."""
    avail = [c for c in available if c not in TIMESTAMP_COLUMNS]
    stamps = [c for c in (target, *(columns or ())) if c in TIMESTAMP_COLUMNS]
    if stamps:
        role = "the target" if stamps[0] == target else "an input"
        raise UserError(f"{stamps[0]} is a timestamp column, not a measurement: it cannot be "
                        f"{role} (name a measured column, e.g. {', '.join(avail[:3])})")
    if target is not None:
        if target not in available:
            raise unknown_name_error("target column", target, avail)
        tgt, tsrc = target, "explicit"
    else:
        found = [c for c in TARGET_CANDIDATES if c in available]
        if not found:
            raise UserError(
                f"no target column: none of {', '.join(TARGET_CANDIDATES)} is in the file; "
                "pass --target COLUMN"
            )
        tgt, tsrc = found[0], "default order " + " > ".join(TARGET_CANDIDATES)
    if columns:
        missing = [c for c in columns if c not in available]
        if len(missing) == 1:
            raise unknown_name_error("input column", missing[0], avail)
        if missing:
            parts = []
            for c in missing:
                hint = close_matches(c, avail)
                parts.append(f"{c!r} (closest: {', '.join(hint)})" if hint else repr(c))
            raise UserError("unknown input columns " + "; ".join(parts))
        if tgt in columns:
            raise UserError(f"the target {tgt!r} cannot also be an input column")
        dup = sorted({c for c in columns if columns.count(c) > 1})
        if dup:
            raise UserError(f"input column listed twice: {', '.join(dup)}")
        return ColumnChoice(tgt, tsrc, tuple(columns), "explicit")
    inputs = []
    for aliases in DEFAULT_DRIVERS.values():
        hit = next((a for a in aliases if a in available), None)
        if hit is not None and hit != tgt:
            inputs.append(hit)
    if not inputs:
        raise UserError(
            "none of the default drivers (TA, SW_IN, PPFD_IN, VPD, P, SWC, TS) is in the "
            "file; pass --columns"
        )
    return ColumnChoice(tgt, tsrc, tuple(inputs), "default set")

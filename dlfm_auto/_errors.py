"""User-facing errors.

A :class:`UserError` is a mistake in what the user asked for (a wrong path, an unknown column,
data too short for the folds). The CLI prints its message on one line and exits with code 2,
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """An error caused by the user's input; the message says what to change."""

    exit_code = 2


def close_matches(name: str, candidates: Iterable[str], n: int = 4) -> list[str]:
    """Closest names to ``name`` (case-insensitive), for "did you mean" hints."""
    cands = list(candidates)
    lower = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.5)
    # Prefix matches catch qualified names (TA -> TA_1_1_1) that difflib scores low.
    prefix = [c for c in cands if c.upper().startswith(name.upper() + "_")]
    out = [lower[h] for h in hits] + [p for p in prefix if p not in hits]
    seen: list[str] = []
    for c in out:
        if c not in seen:
            seen.append(c)
    return seen[:n]


def unknown_name_error(kind: str, name: str, candidates: Iterable[str]) -> UserError:
    """A UserError for an unknown column/family/... naming the closest existing names."""
    cands = list(candidates)
    hint = close_matches(name, cands)
    if hint:
        return UserError(f"unknown {kind} {name!r}; closest: {', '.join(hint)}")
    shown = ", ".join(cands[:12]) + (" ..." if len(cands) > 12 else "")
    return UserError(f"unknown {kind} {name!r}; available: {shown}")

"""Report options, validated in one place before any work is done.

Every report checks its options here first, so a bad value is a one-line error that names the
option and what is allowed, before a model is trained, a study is created or a folder is
touched. The rules reuse the interval type of :mod:`dlfm_auto.data._config` (one style of
validation for the whole tool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlfm_auto._errors import UserError
from dlfm_auto.data._config import CONSTRAINTS as _PREP_RULES
from dlfm_auto.data._config import Interval, describe_rule, rule_allows


@dataclass(frozen=True)
class Each:
    """A non-empty list whose every item obeys ``rule``."""

    rule: Any

    def check(self, value: Any) -> bool:
        return isinstance(value, list | tuple) and len(value) > 0 and all(
            rule_allows(self.rule, v) for v in value)

    def __str__(self) -> str:
        return f"a non-empty list of {describe_rule(self.rule)}"


#: ``report memory``'s sequence lengths (days) when none are given.
DEFAULT_LENGTHS = (1, 3, 7, 14, 30, 60, 90, 120)

#: The one table of what report options allow (names as in the CLI, with ``_``).
RULES: dict[str, Any] = {
    "num_models": Interval(int, 1, 100),
    "sequence_lengths": Each(_PREP_RULES["sequence_length"]),
    "max_epochs": [None, Interval(int, 1, None)],
    "n_jobs": Interval(int, 1, 256),
    "lags": [None, Each(Interval(int, 0, _PREP_RULES["sequence_length"].high))],
}

LAGS_FORMS = "A..B (0 <= A <= B) or a comma list such as 0,1,7"


def check_options(**values: Any) -> None:
    """Raise UserError naming the first option whose value its rule does not allow."""
    for name, value in values.items():
        rule = RULES[name]
        if not rule_allows(rule, value):
            shown = list(value) if isinstance(value, tuple) else value
            raise UserError(f"invalid {name}={shown!r}: must be {describe_rule(rule)}")


def parse_lags(text: str | None) -> tuple[int, ...] | None:
    """``A..B`` or ``a,b,c`` as lags in days (None: the whole window), checked by RULES."""
    if text is None or not text.strip():
        return None
    try:
        if ".." in text:
            a, b = (int(s) for s in text.split("..", 1))
            if a > b:
                raise ValueError
            lags = tuple(range(a, b + 1))
        else:
            lags = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"invalid lags={text!r}: must be {LAGS_FORMS}") from None
    check_options(lags=lags)
    return lags

"""Model families: one module each, one registry line each."""

from dlfm_auto._errors import unknown_name_error
from dlfm_auto.models import ann, dynamic_ann, lstm, random_forest, rnn, xgboost, xlstm
from dlfm_auto.models._base import (
    FEEDS,
    OPTIMIZERS,
    Family,
    Regressor,
    apply_feed,
    feed_width,
)

FAMILIES: dict[str, Family] = {
    "ann": ann.FAMILY,
    "dynamic_ann": dynamic_ann.FAMILY,
    "rnn": rnn.FAMILY,
    "lstm": lstm.FAMILY,
    "xlstm": xlstm.FAMILY,
    "xgboost": xgboost.FAMILY,
    "random_forest": random_forest.FAMILY,
}


def get_family(name: str) -> Family:
    """The family called ``name``; an unknown name lists the closest ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise unknown_name_error("model family", name, FAMILIES) from None


__all__ = [
    "FAMILIES",
    "FEEDS",
    "OPTIMIZERS",
    "Family",
    "Regressor",
    "apply_feed",
    "feed_width",
    "get_family",
]

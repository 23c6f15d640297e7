"""Storage URL helpers that need no heavy imports (the CLI parser uses them)."""

from __future__ import annotations

DEFAULT_STORAGE = "sqlite:///studies/dlfm.db"


def display_url(url: str) -> str:
    """URL without a password, for messages and summaries."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in cred else url
    return url

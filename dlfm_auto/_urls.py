"""Storage URL helpers that need no heavy imports (the CLI parser uses them).

A password in a storage URL is never printed: :func:`display_url` masks one URL,
:func:`mask_secrets` masks every URL or ``password=`` inside any text (a driver's error message
may quote the URL). Both live here, once, so every verb and error path uses the same rule.
"""

from __future__ import annotations

import re

DEFAULT_STORAGE = "sqlite:///studies/dlfm.db"

# scheme://user:password@host  ->  scheme://user:***@host
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)[^\s'\"/]*@")
# libpq keyword form and query parameters: password=secret / password: secret
_KW_PASSWORD = re.compile(r"(password\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s&;,)]+)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` with every password (in URLs and ``password=...``) replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KW_PASSWORD.sub(r"\1***", text)


def display_url(url: str) -> str:
    """URL without a password, for messages and summaries."""
    return mask_secrets(url)

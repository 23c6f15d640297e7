"""Storage URLs, parsed once where they enter (the CLI edge) into :class:`StorageURL`.

No heavy imports here: the CLI parser uses this module.

A password in a storage URL is never printed: :func:`display_url` masks one URL,
:func:`mask_secrets` masks every URL or ``password=`` inside any text (a driver's error message
may quote the URL). Both live here, once, so every verb and error path uses the same rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STORAGE = "sqlite:///studies/dlfm.db"

# scheme://user:password@host  ->  scheme://user:***@host
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)[^\s'\"/]*@")
# libpq keyword form and query parameters: password=secret / password: secret
_KW_PASSWORD = re.compile(r"(password\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s&;,)]+)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` with every password (in URLs and ``password=...``) replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KW_PASSWORD.sub(r"\1***", text)


def display_url(url: str | StorageURL) -> str:
    """URL without a password, for messages and summaries."""
    return url.display if isinstance(url, StorageURL) else mask_secrets(url)


@dataclass(frozen=True)
class StorageURL:
    """A storage URL and what is known from its text alone.

    ``kind``: ``sqlite`` (a file), ``sqlite-memory`` (lives only inside one process),
    ``journal`` (an Optuna journal file), ``postgresql`` or ``other`` (any SQLAlchemy URL).
    ``path``: the file of a SQLite or journal storage. ``str()`` is the masked form, so an
    f-string can never print the password; the URL itself is :attr:`url`.
    """

    url: str
    kind: str
    path: Path | None = None

    @classmethod
    def parse(cls, url: str | StorageURL) -> StorageURL:
        if isinstance(url, StorageURL):
            return url
        if url.startswith("sqlite:"):
            rest = url[len("sqlite:") :].split("?", 1)[0]
            if rest.lstrip("/") in ("", ":memory:"):
                return cls(url, "sqlite-memory")
            if url.startswith("sqlite:///"):
                return cls(url, "sqlite", Path(rest[len("///") :]))
            return cls(url, "other")
        if url.startswith("journal://"):
            # journal:///abs/path (three slashes: empty host, then an absolute path, as in a
            # file:// URL) and journal:////abs (SQLAlchemy's form) are /abs/path;
            # journal://rel/path is relative to the current folder
            rest = url[len("journal://") :]
            return cls(url, "journal", Path("/" + rest.lstrip("/")) if rest.startswith("/")
                       else Path(rest))
        if "://" not in url and url.endswith((".journal", ".log")):
            return cls(url, "journal", Path(url))  # a bare journal file path
        if url.startswith("postgresql"):
            return cls(url, "postgresql")
        return cls(url, "other")

    @property
    def display(self) -> str:
        """The URL with its password masked, for messages and summaries."""
        return mask_secrets(self.url)

    @property
    def artifacts_dir(self) -> str:
        """Default model artifacts folder: ``artifacts`` beside the SQLite or journal file,
        ``studies/artifacts`` for server storages."""
        return str((self.path.parent if self.path is not None else Path("studies"))
                   / "artifacts")

    def __str__(self) -> str:
        return self.display

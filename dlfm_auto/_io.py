"""Atomic file writes: a report or table is either complete or absent, never half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(dest: str | Path, text: str) -> Path:
    """Write ``text`` to ``dest`` through a temporary file and ``os.replace``."""
    return atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_bytes(dest: str | Path, data: bytes) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report/table is a normal file
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest

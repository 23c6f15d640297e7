"""Atomic file writes: a report or table is either complete or absent, never half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dlfm_auto._errors import UserError


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


def check_output_file(dest: str | Path, option: str) -> Path:
    """Refuse, before any work, an output file path that cannot be written as a file.

    A directory is never replaced; a path under a file, or in a folder without write
    permission, fails here with one line instead of after minutes of work.
    """
    p = Path(dest)
    if p.is_dir():
        raise UserError(f"{option} {p} is a directory; give a file name (it is never replaced)")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{option} {p}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"{option} {p}: no permission to write in {parent}")
    return p


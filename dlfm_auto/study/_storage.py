"""Opening study storages safely.

SQLite under ``studies/`` is the default; any SQLAlchemy URL (PostgreSQL for many machines) and
Optuna's journal file backend work the same. Before Optuna touches an existing SQLite file we
check, read-only, that it is an Optuna database: a corrupt, locked or foreign file gets a clear
error and is never modified. Heartbeats are on for every RDB storage, so a trial whose process
died (kill -9, power cut) is failed and re-queued by the next worker that starts a trial.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from dlfm_auto._errors import UserError
from dlfm_auto._urls import DEFAULT_STORAGE, display_url  # noqa: F401 (re-exported)

# Heartbeats and stale-trial retry are "experimental" in Optuna since 2.8; we rely on them on
# purpose, so their warnings would only be noise for users.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace period) in seconds; env overrides exist for tests and slow clusters."""
    interval = int(os.environ.get("DLFM_AUTO_HEARTBEAT", "10"))
    grace = int(os.environ.get("DLFM_AUTO_GRACE", str(3 * interval)))
    return interval, grace


def sqlite_path(url: str) -> Path | None:
    """File path of a ``sqlite:///`` URL (None for other storages or in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///") :].split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


def journal_path(url: str) -> Path | None:
    """Journal file of a ``journal:///path`` URL or a bare ``*.journal``/``*.log`` path."""
    if url.startswith("journal:///"):
        return Path(url[len("journal:///") :])
    if "://" not in url and url.endswith((".journal", ".log")):
        return Path(url)
    return None


def check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not a readable Optuna SQLite database; never write to it."""
    if not path.exists():
        return
    if path.is_dir():
        raise UserError(f"study storage {path} is a directory, not a SQLite file")
    with open(path, "rb") as f:
        magic = f.read(16)
    if path.stat().st_size == 0:
        return  # an empty file is what sqlite itself creates; Optuna initialises it
    if magic != b"SQLite format 3\x00":
        raise UserError(
            f"study storage {path} is not a SQLite database (corrupt, or another kind of "
            f"file); nothing was changed: move it away or pass --storage"
        )
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "studies" in tables:
                con.execute("SELECT count(*) FROM studies").fetchone()
                if con.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("quick_check failed")
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        if "locked" in str(e):
            raise UserError(
                f"study storage {path} is locked by another program (an open transaction "
                f"held for over 10 s); close it and run again"
            ) from None
        raise UserError(f"cannot read study storage {path}: {e}") from None
    except sqlite3.DatabaseError as e:
        raise UserError(
            f"study storage {path} is corrupt ({e}); nothing was changed: restore a backup, "
            f"or move it away and pass --storage"
        ) from None
    if tables and "studies" not in tables:
        shown = ", ".join(sorted(tables)[:5])
        raise UserError(
            f"study storage {path} is another application's SQLite database (tables: {shown}); "
            f"nothing was changed: pass --storage with another file"
        )


class SQLiteStorage(RDBStorage):
    """RDBStorage for SQLite whose WAITING -> RUNNING claim is atomic across processes.

    Optuna claims a queued trial with ``SELECT ... FOR UPDATE`` then ``UPDATE``; SQLite ignores
    ``FOR UPDATE``, so two workers can both read a trial as WAITING and both run it (seen here
    with two workers on a grid study: one point ran twice, the second ``tell`` failed). A file
    lock beside the database serialises the claim; PostgreSQL's row lock needs no help.
    """

    def __init__(self, url: str, lock_path: Path, **kw: object) -> None:
        super().__init__(url, **kw)
        self._lock_path = lock_path

    def set_trial_state_values(self, trial_id, state, values=None):  # type: ignore[override]
        if state != optuna.trial.TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)
        import fcntl

        with open(self._lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                return super().set_trial_state_values(trial_id, state, values)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def open_storage(url: str = DEFAULT_STORAGE, *, heartbeat: bool = True, must_exist: bool = False
                 ) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` with heartbeats; user-facing errors for bad URLs/files."""
    jpath = journal_path(url)
    if jpath is not None:
        if must_exist and not jpath.exists():
            raise UserError(f"no study journal at {jpath}")
        jpath.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(jpath)))
    spath = sqlite_path(url)
    engine_kwargs: dict = {}
    if spath is not None:
        if must_exist and not spath.exists():
            raise UserError(f"no study database at {spath} (run `run-study` first)")
        check_sqlite_file(spath)
        spath.parent.mkdir(parents=True, exist_ok=True)
        # Parallel writers wait for the lock instead of failing with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 120}}
    elif url.startswith("postgresql"):
        engine_kwargs = {"pool_pre_ping": True}
    kw: dict = {}
    if heartbeat:
        interval, grace = heartbeat_settings()
        kw = dict(
            heartbeat_interval=interval,
            grace_period=grace,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
    try:
        if spath is not None:
            lock = spath.with_name(spath.name + ".lock")
            return SQLiteStorage(url, lock, engine_kwargs=engine_kwargs, **kw)
        return RDBStorage(url, engine_kwargs=engine_kwargs, **kw)
    except ImportError as e:
        raise UserError(f"storage {url!r} needs a database driver that is not installed: {e}"
                        ) from None
    except Exception as e:  # sqlalchemy errors: bad URL, server down, schema too new/old
        msg = str(e).splitlines()[0]
        raise UserError(f"cannot open study storage {url!r}: {msg}") from None

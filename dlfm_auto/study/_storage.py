"""Opening study storages safely, and the storage-level guarantees the workers rely on.

SQLite under ``studies/`` is the default; any SQLAlchemy URL (PostgreSQL for many machines) and
Optuna's journal file backend work the same. Before Optuna touches an existing SQLite file we
check, read-only, that it is an Optuna database: a corrupt, locked, read-only or foreign file
gets a clear error and is never modified. Every error names the storage with its password
masked (``***``): this module is where every verb opens a storage, so masking here covers them.

What the storages returned here add to Optuna's (one mixin, three backends):

* ``exclusive()``: one lock per storage across processes and machines (a file lock beside a
  SQLite/journal file, a PostgreSQL advisory lock), for check-then-act steps: first creation of
  a SQLite file, storing a study's spec, queueing grid points, re-queueing dead trials.
* a cap on trial creation (``cap``): a worker asks for a new trial only while the study's
  finished + running + queued trials are under its total, checked and created under the lock,
  so no surplus trial is ever created and then failed.
* the owner of every running trial (user attrs ``host``, ``pid``): a trial left RUNNING by a
  dead process of this host is failed and re-queued at once (``fail_dead_local_trials``);
  trials of other hosts by the heartbeat (grace period).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import stat
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from dlfm_auto._errors import UserError
from dlfm_auto._urls import (  # noqa: F401 (re-exported)
    DEFAULT_STORAGE,
    StorageURL,
    display_url,
    mask_secrets,
)

#: States that hold a slot of the study's total (finished, running, queued).
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
MAX_RETRIES = 10  # re-runs of one trial whose process died (a trial that kills it: not for ever)

# Heartbeats and stale-trial retry are "experimental" in Optuna since 2.8; we rely on them on
# purpose, so their warnings would only be noise for users.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace period) in seconds; env overrides exist for tests and slow clusters."""
    interval = int(os.environ.get("DLFM_AUTO_HEARTBEAT", "10"))
    grace = int(os.environ.get("DLFM_AUTO_GRACE", str(3 * interval)))
    return interval, grace


def journal_path(url: str | StorageURL) -> Path | None:
    """Journal file of a ``journal://`` URL or a bare ``*.journal``/``*.log`` path."""
    u = StorageURL.parse(url)
    return u.path if u.kind == "journal" else None


def check_writable(path: Path) -> None:
    """Refuse, before any work, a storage file or folder that cannot be written.

    Permission bits are checked as well as ``os.access`` (root may write anything, yet a file
    made read-only by its owner was meant to stay unchanged). SQLite also needs to write its
    journal beside the file, so the folder must be writable too.
    """
    def read_only(p: Path) -> bool:
        return not os.access(p, os.W_OK) or not (p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP
                                                                      | stat.S_IWOTH))

    if path.exists() and path.is_file() and read_only(path):
        raise UserError(f"study storage {path} is read-only; nothing was changed: make it "
                        f"writable, or pass --storage with a writable file")
    folder = path.parent if str(path.parent) else Path(".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.exists() and read_only(folder):
        raise UserError(f"the folder {folder} of study storage {path.name} is read-only; "
                        f"nothing was changed: make it writable, or pass --storage elsewhere")


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
        if "readonly" in str(e) and path.with_name(path.name + "-journal").exists():
            # A hot rollback journal: a process was killed mid-write. SQLite rolls it back on
            # the next read-write open (its own crash recovery), which a read-only check
            # cannot do; the file is not corrupt.
            return
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


class TotalReached(Exception):
    """A new trial was refused: the study's total is held by finished, running, queued trials."""


class _ReentrantLock:
    """An exclusive section across processes, re-entrant within one process (nested sections
    take the underlying lock once). Subclasses say how to take and drop it."""

    def __init__(self) -> None:
        self._depth = 0
        self._mutex = threading.RLock()

    def _acquire(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._mutex:
            if self._depth == 0:
                self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()


class _FileLock(_ReentrantLock):
    """An exclusive ``flock`` on a file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._file: Any = None

    def _acquire(self) -> None:
        import fcntl

        self._file = open(self.path, "a")  # noqa: SIM115 (held across the section)
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def _release(self) -> None:
        import fcntl

        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


class _AdvisoryLock(_ReentrantLock):
    """A PostgreSQL session advisory lock on its own connection."""

    KEY = 0x646C666D  # "dlfm": one lock per database, held only for short check-then-act steps

    def __init__(self, engine: Any) -> None:
        super().__init__()
        self._engine = engine
        self._conn: Any = None

    def _acquire(self) -> None:
        from sqlalchemy import text

        self._conn = self._engine.connect()
        self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.KEY})

    def _release(self) -> None:
        from sqlalchemy import text

        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.KEY})
        finally:
            self._conn.close()
            self._conn = None


def _proc_start(pid: int) -> str:
    """Start time of a process (clock ticks since boot), to tell a reused pid from its owner."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


_HOST = socket.gethostname()
OWNER_ATTR = "dlfm_auto.owner_start"  # system attr: start time of the owner process


def this_host() -> str:
    """The host name recorded on the trials this machine runs."""
    return _HOST


class _Guarded:
    """Mixin for Optuna storages: an exclusive section, a creation cap, trial owners."""

    _lock: Any = None
    #: The URL it was opened from (messages name it, password masked)
    location: StorageURL | None = None
    #: (study_id, total): creating a trial beyond ``total`` live trials raises TotalReached
    cap: tuple[int, float] | None = None

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One process at a time, across processes (and machines for PostgreSQL)."""
        if self._lock is None:
            yield
        else:
            with self._lock():
                yield

    def _capped_create(self, create: Any, study_id: int, template: FrozenTrial | None) -> Any:
        if template is not None or self.cap is None or self.cap[0] != study_id:
            return create(study_id, template)
        with self.exclusive():
            live = self.get_all_trials(study_id, deepcopy=False, states=LIVE)  # type: ignore[attr-defined]
            if len(live) >= self.cap[1]:
                raise TotalReached(f"{len(live)} trials finished, running or queued")
            return create(study_id, template)

    def _mark_owner(self, trial_id: int) -> None:
        """Record which process runs the trial (host, pid, process start time)."""
        pid = os.getpid()
        self.set_trial_user_attr(trial_id, "host", _HOST)  # type: ignore[attr-defined]
        self.set_trial_user_attr(trial_id, "pid", pid)  # type: ignore[attr-defined]
        self.set_trial_system_attr(trial_id, OWNER_ATTR, _proc_start(pid))  # type: ignore[attr-defined]

    def _claim(self, claim: Any, trial_id: int, state: TrialState, values: Any) -> bool:
        if state != TrialState.RUNNING:
            return claim(trial_id, state, values)
        # SQLite ignores Optuna's SELECT ... FOR UPDATE: two workers could both claim one
        # queued trial (one grid point run twice). The lock makes the claim atomic everywhere.
        with self.exclusive():
            ok = claim(trial_id, state, values)
        if ok:
            self._mark_owner(trial_id)
        return ok


class GuardedRDBStorage(_Guarded, RDBStorage):
    """RDBStorage (SQLite, PostgreSQL, ...) with the guarantees of :class:`_Guarded`."""

    def _create_new_trial(self, study_id, template_trial=None):  # type: ignore[override]
        frozen = self._capped_create(super()._create_new_trial, study_id, template_trial)
        if template_trial is None:
            self._mark_owner(frozen._trial_id)
        return frozen

    def set_trial_state_values(self, trial_id, state, values=None):  # type: ignore[override]
        return self._claim(super().set_trial_state_values, trial_id, state, values)


class GuardedJournalStorage(_Guarded, JournalStorage):
    """JournalStorage with the guarantees of :class:`_Guarded` (its lock: a file beside it)."""

    def create_new_trial(self, study_id, template_trial=None):  # type: ignore[override]
        trial_id = self._capped_create(super().create_new_trial, study_id, template_trial)
        if template_trial is None:
            self._mark_owner(trial_id)
        return trial_id

    def set_trial_state_values(self, trial_id, state, values=None):  # type: ignore[override]
        return self._claim(super().set_trial_state_values, trial_id, state, values)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_lock", None)
        return state


def guarded(storage: optuna.storages.BaseStorage) -> _Guarded | None:
    """The guarded storage under Optuna's cache wrapper (``study._storage``), if any."""
    inner = getattr(storage, "_backend", storage)
    return inner if isinstance(inner, _Guarded) else None


def owner_is_dead(trial: FrozenTrial) -> bool:
    """The trial's owner process ran on this host and is gone (or its pid was reused)."""
    if trial.user_attrs.get("host") != _HOST:
        return False
    pid = trial.user_attrs.get("pid")
    if not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by another user
    started = trial.system_attrs.get(OWNER_ATTR)
    return bool(started) and _proc_start(pid) != started


def requeue(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue a re-run of a trial that died with its process: its WHOLE point.

    A queued (grid) trial is re-run with its queued point (``fixed_params``), not with the
    parameters it had drawn before the kill; a sampled trial keeps what it had drawn. Nothing
    is queued when a live trial already covers the point (another process re-queued it) or the
    trial was retried ``MAX_RETRIES`` times. Returns whether a trial was queued.
    """
    point = trial.system_attrs.get("fixed_params") or trial.params
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRIES:
        return False
    g = guarded(study._storage)
    section = g.exclusive() if g is not None else contextlib.nullcontext()
    with section:
        if study._storage.get_trial(trial._trial_id).state != TrialState.FAIL:
            # Its FAIL did not land: the owner finished it first (a late heartbeat judged
            # stale while the trial was completing). Re-queueing would run its point twice.
            return False
        for t in study.get_trials(deepcopy=False, states=LIVE):
            if trial_point(t) == point and t.number != trial.number:
                return False
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING,
            system_attrs={"fixed_params": point,
                          "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                          "retry_history": history},
        ))
    return True


def trial_point(t: FrozenTrial) -> dict[str, Any]:
    """The parameters a trial stands for: its queued point when it had one, else its draws."""
    return t.system_attrs.get("fixed_params") or t.params


def _requeue_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Heartbeat callback: a trial whose heartbeat stopped is re-queued (its whole point)."""
    requeue(study, trial)


def _orphaned(trial: FrozenTrial) -> bool:
    """A RUNNING trial with no owner recorded, started over a grace period ago.

    A process killed between creating (or claiming) a trial and recording its owner leaves such
    a trial; it has no heartbeat either, and Optuna never counts a trial without a heartbeat as
    stale, so without this it would stay RUNNING for ever.
    """
    from datetime import UTC, datetime

    if "host" in trial.user_attrs or trial.datetime_start is None:
        return False
    start = trial.datetime_start
    now = datetime.now(UTC) if start.tzinfo else datetime.now()
    return (now - start).total_seconds() > max(heartbeat_settings()[1], 10)


def fail_dead_local_trials(study: optuna.Study) -> int:
    """Fail and re-queue RUNNING trials whose owner process on this host is gone; count.

    Also trials with no recorded owner after a grace period (see ``_orphaned``).
    """
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not (owner_is_dead(t) or _orphaned(t)):
            continue
        try:
            study._storage.set_trial_user_attr(
                t._trial_id, "error",
                f"its process (pid {t.user_attrs.get('pid')} on {_HOST}) died"
                if "host" in t.user_attrs else "its process died before recording itself")
            if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process failed (or finished) it first
        requeue(study, study._storage.get_trial(t._trial_id))
        n += 1
    return n


def open_storage(url: str | StorageURL = DEFAULT_STORAGE, *, heartbeat: bool = True,
                 must_exist: bool = False) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; user-facing errors (password masked) for bad URLs/files.

    ``heartbeat=True`` is for processes that write (run-study, workers, memory units): the
    storage must be writable and gets heartbeats; read-only verbs pass ``heartbeat=False``.
    A verb opens its storage once and passes it on (each opening re-runs the file checks).
    """
    u = StorageURL.parse(url)
    shown = u.display
    if u.kind == "sqlite-memory":
        raise UserError(f"storage {shown!r} is an in-memory database that vanishes when this "
                        f"process ends; pass a file (sqlite:///studies/dlfm.db) or a server URL")
    if u.kind == "journal":
        journal = _open_journal(u.path, heartbeat=heartbeat, must_exist=must_exist)
        journal.location = u
        return journal
    url = u.url
    spath = u.path if u.kind == "sqlite" else None
    engine_kwargs: dict = {}
    lock: _FileLock | None = None
    if spath is not None:
        if must_exist and not spath.exists():
            raise UserError(f"no study database at {spath} (run `run-study` first)")
        check_sqlite_file(spath)
        if heartbeat:
            check_writable(spath)
        # Parallel writers wait for the lock instead of failing with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 120}}
        if heartbeat or not spath.exists():
            spath.parent.mkdir(parents=True, exist_ok=True)
            lock = _FileLock(spath.with_name(spath.name + ".lock"))
    elif u.kind == "postgresql":
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    kw: dict = {}
    if heartbeat:
        interval, grace = heartbeat_settings()
        kw = dict(heartbeat_interval=interval, grace_period=grace,
                  heartbeat_stale_trial_callback=_requeue_stale)
    try:
        # Several processes creating a new SQLite file at once crash ("table studies already
        # exists", "UNIQUE constraint failed: alembic_version"): create it under the lock.
        with lock() if lock is not None else contextlib.nullcontext():
            storage = GuardedRDBStorage(url, engine_kwargs=engine_kwargs, **kw)
    except ImportError as e:
        raise UserError(f"storage {shown!r} needs a database driver that is not installed: "
                        f"{mask_secrets(str(e))}") from None
    except Exception as e:  # sqlalchemy errors: bad URL, server down, schema too new/old
        msg = mask_secrets(str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise UserError(f"cannot open study storage {shown!r}: {msg}") from None
    storage._lock = lock if lock is not None else (
        _AdvisoryLock(storage.engine) if storage.engine.dialect.name == "postgresql" else None)
    storage.location = u
    return storage


def as_storage(storage: str | StorageURL | optuna.storages.BaseStorage, *, heartbeat: bool = True,
               must_exist: bool = False) -> optuna.storages.BaseStorage:
    """An opened storage as it is; a URL opened by :func:`open_storage`. Functions that take
    either let a verb open its storage once and pass it to each step."""
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    return open_storage(storage, heartbeat=heartbeat, must_exist=must_exist)


def _open_journal(path: Path, *, heartbeat: bool, must_exist: bool) -> GuardedJournalStorage:
    if must_exist and not path.exists():
        raise UserError(f"no study journal at {path}")
    if path.is_dir():
        raise UserError(f"study journal {path} is a directory, not a file")
    if heartbeat:
        check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = GuardedJournalStorage(JournalFileBackend(str(path)))
    except OSError as e:
        raise UserError(f"cannot open study journal {path}: {e.strerror or e}") from None
    except Exception as e:  # garbage in the file: JSON/UTF-8 decoding or replay errors
        raise UserError(f"study journal {path} is not an Optuna journal (corrupt, or another "
                        f"kind of file: {type(e).__name__}); nothing was changed: move it away "
                        f"or pass --storage") from None
    storage._lock = _FileLock(path.with_name(path.name + ".dlfm-lock"))
    return storage

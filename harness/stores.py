"""Where results are kept: the Optuna storage and the MLflow tracking store, named by URLs.

One place opens an Optuna storage (every command reads a study the same way: SQLite, PostgreSQL,
MySQL or a journal file), checks a URL before anything is written, hides passwords wherever a URL
is shown, and serialises the workers of a study when they claim trials (StudyLock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_STORAGE = "sqlite:///optuna.db"  # one file holds every study of a project
# Optuna's heartbeats (on every RDB storage): a worker records one every HEARTBEAT_S while it holds a
# trial; a trial without one for GRACE_S is failed by the next worker that claims a trial. The
# heartbeat comes from the sweep process (not the training), so a busy GPU never delays it.
HEARTBEAT_S = 5
GRACE_S = 20
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # study and experiment names: used in paths and filters
_NAME = re.compile(NAME_PATTERN)


class StoreError(Exception):
    """A storage URL or a name is unusable; the message says which and what would be valid."""


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for anything shown or logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def check_name(name: str, what: str = "study") -> str:
    """Names become folder names and MLflow filter values: only letters, digits and . _ - are allowed."""
    if not _NAME.match(name):
        raise StoreError(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


def is_journal(url: str) -> bool:
    """A journal file: any storage given as a path rather than a URL."""
    return "://" not in url


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:"):
        return None
    path = url.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path)


@contextlib.contextmanager
def opening(url: str) -> Iterator[None]:
    """Processes on one host opening an SQLite store take turns: the first ones create it, and MLflow's and
    Optuna's schema migrations (alembic) trip over each other there. A store in a folder this process
    cannot write to is opened without the turn (nothing to create). Server databases: retry_schema_race."""
    file = sqlite_path(url)
    if file is None:
        yield
        return
    file.resolve().parent.mkdir(parents=True, exist_ok=True)
    with _flocked(Path(f"{file}.open.harness-lock"), required=False):
        yield


@contextlib.contextmanager
def _flocked(path: Path, required: bool = True) -> Iterator[None]:
    """An exclusive lock on a file beside a store, released by the kernel if its holder dies; not `required`:
    none where the file cannot be made (a read-only folder)."""
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(open(path, "a"))
        except OSError:
            if required:
                raise
            handle = None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
            stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
        yield


def check_storage(url: str) -> None:
    """Fail early, in one message, on a storage URL that cannot work (exit 2, nothing written)."""
    path = sqlite_path(url) if not is_journal(url) else Path(url)
    if url.startswith("sqlite") and not url.startswith("sqlite:///"):
        raise StoreError(f"--storage {url!r}: write SQLite storages as sqlite:///relative/path.db or sqlite:////abs.db")
    if path is not None:
        if path.is_dir():
            raise StoreError(f"--storage {redact(url)}: {path} is a folder; name a file in it, e.g. {path}/optuna.db")
        if not path.parent.is_dir():
            raise StoreError(f"--storage {redact(url)}: folder {path.parent} does not exist; create it first")
        return
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme not in ("postgresql", "mysql", "mariadb", "oracle", "mssql"):
        raise StoreError(
            f"--storage {redact(url)}: unknown scheme '{scheme}'. Use sqlite:///file.db, "
            "postgresql://user@host/db, mysql://user@host/db, or a journal file path"
        )


_OPENED: dict[str, Any] = {}
_OPENING = threading.Lock()


def open_storage(url: str) -> Any:
    """The Optuna storage behind a URL, with heartbeats on every RDB storage (SQLite included).

    One per URL per process, as MLflow keeps one engine per database: each RDBStorage has its own
    connection pool, and one opened per call (the report reloads the study after every trial) holds
    its connections until the garbage collector runs, which exhausts PostgreSQL's max_connections.
    """
    with _OPENING:
        if url not in _OPENED:
            _OPENED[url] = _open_storage(url)
        return _OPENED[url]


def _open_storage(url: str) -> Any:
    import warnings

    import optuna

    from harness.tracking import retry_schema_race

    check_storage(url)
    if is_journal(url):  # no heartbeats here: dead workers on this host are found by PID
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The harness claims trials with ask/tell (under StudyLock) and beats from its own thread.
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used with Study.optimize.*")
    kwargs: dict[str, Any] = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        with opening(url):
            return retry_schema_race(lambda: optuna.storages.RDBStorage(url, **kwargs))
    except ImportError as exc:
        raise StoreError(f"--storage {redact(url)}: the database driver is missing ({exc}); "
                         "pip install -e '.[postgres]' for PostgreSQL") from None  # fmt: skip
    except Exception as exc:
        if type(exc).__module__.startswith("sqlalchemy"):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot open the Optuna storage {redact(url)}: {first}") from None
        raise


class StudyLock:
    """One worker at a time claims trials of a study, so a study never overshoots its trial count and
    no worker sees another's trial before its owner is recorded.

    PostgreSQL and MySQL: an advisory lock held by a dedicated connection (released by the server when
    a killed worker's connection drops). SQLite and journal files: an flock on `<file>.harness-lock`
    (released by the kernel when a worker dies); they live on one host anyway. Not the database file
    itself: closing any descriptor of it would drop SQLite's own POSIX locks in this process.
    """

    def __init__(self, url: str, study: str):
        self.url, self.study = url, study
        self._key = int.from_bytes(hashlib.sha256(f"harness:{study}".encode()).digest()[:8], "big", signed=True)
        self._engine: Any = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        file = Path(self.url) if is_journal(self.url) else sqlite_path(self.url)
        if file is not None:
            with _flocked(Path(f"{file}.harness-lock")):
                yield
            return
        with self._server_lock():
            yield

    @contextlib.contextmanager
    def _server_lock(self) -> Iterator[None]:
        import sqlalchemy

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
        mysql = self._engine.dialect.name in ("mysql", "mariadb")
        with self._engine.connect() as conn:
            if mysql:
                conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, -1)"), {"k": f"harness:{self.study}"[:64]})
            else:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
            try:
                yield
            finally:
                if mysql:
                    conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:k)"), {"k": f"harness:{self.study}"[:64]})
                else:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                conn.commit()

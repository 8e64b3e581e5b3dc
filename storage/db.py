"""Engine and session factory from a database URL; migrations applied by `migrate()`."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from storage.prepared import DIRECT_OPTION

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 15000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web read while a worker writes; busy_timeout waits out short write locks.
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, *, direct_sql: bool = True) -> Engine:
    """An engine for `url`, tuned for SQLite's single writer when that is what it is.
    `direct_sql`: the hot statements run on the driver's cursor (storage/prepared.py)."""
    options = {DIRECT_OPTION: direct_sql}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15},
                               execution_options=options)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         execution_options=options)


class Database:
    """A process-wide engine plus its session factory; holds connections, never user data."""

    def __init__(self, url: str, *, direct_sql: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url, direct_sql=direct_sql)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back when it raises."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core transaction, no ORM session: committed when the block ends, rolled back when
        it raises. For the per-run hot paths, which run only prebuilt Core statements: it costs
        markedly less than a session's begin/commit/close (docs/benchmarks.md)."""
        with self.engine.begin() as connection:
            yield connection

    def dispose(self, *, close: bool = True) -> None:
        self.engine.dispose(close=close)


def _sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, or None (another database, or an in-memory one)."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database)
    return None


# The key of the PostgreSQL advisory lock that migrations hold: any constant every Runlane
# process shares (the ASCII bytes "runlanem" as a 64-bit number).
MIGRATION_LOCK_KEY = 0x72756E6C616E656D


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Held while one process migrates the database at `url`; the others wait.

    With RUNLANE_AUTO_MIGRATE every gunicorn worker and every Celery worker may migrate at
    once, and one that ran Alembic next to another saw tables the other had just created and
    failed. PostgreSQL: a session advisory lock, released by the server if the process dies.
    SQLite: `flock` on a file next to the database (the database's own locks last one
    transaction, a migration is several); the kernel releases it with the process.
    """
    path = _sqlite_file(url)
    if path is not None:
        import fcntl  # noqa: PLC0415 - POSIX only, like the servers Runlane runs under

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".migrate-lock"), "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return
    engine = make_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            yield
            return
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
            connection.commit()  # the lock is the session's, not the transaction's
            try:
                yield
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
                connection.commit()
    finally:
        engine.dispose()


def migrate(url: str, *, lock: bool = True) -> None:
    """Bring the schema at `url` to the newest Alembic revision, holding the migration lock
    unless the caller already holds it (`lock=False`).

    A SQLite file's folder is created first: `runlane migrate` in a fresh folder must not fail
    on the instance folder that `runlane up` would have made.
    """
    if lock:
        with migration_lock(url):
            migrate(url, lock=False)
        return
    with quiet_alembic():  # its plugins are set up when its runtime is first imported
        from alembic import command  # noqa: PLC0415 - only the CLI and tests migrate
        from alembic.config import Config  # noqa: PLC0415

    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = make_engine(url)
    try:
        command.upgrade(cfg, "head")
    finally:
        cfg.attributes["engine"].dispose()


@contextmanager
def quiet_alembic() -> Iterator[None]:
    """Meanwhile, Alembic's plugin registry logs only warnings: loading Alembic's runtime logs
    one "setup plugin" line per built-in plugin at INFO, news to no one starting a process."""
    logger = logging.getLogger("alembic.runtime.plugins")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)

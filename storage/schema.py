"""Is the database at the schema this code was written for? Asked before serving and by /readyz.

A web or worker on a database without the schema would start and then fail every request or
every reaper tick with "no such table"; they ask here first and refuse with a message naming
`runlane migrate` instead. The revision this code needs is the head of the migration scripts
shipped with it, read once per process.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from domain.errors import ConfigurationError
from storage.db import (
    MIGRATIONS,
    SQLITE_BUSY_TIMEOUT_MS,
    make_engine,
    migrate,
    migration_lock,
    quiet_alembic,
)

# A probe waits this long for another writer, not the sessions' long busy timeout: a readiness
# answer that takes seconds is as good as a failed one.
PROBE_LOCK_TIMEOUT_MS = 1000
_NO_OP_WRITE = text("UPDATE alembic_version SET version_num = version_num")


class SchemaNotCurrent(ConfigurationError):
    """The database is not at the migration head this code needs."""

    title = "Database schema not current"


@dataclass(frozen=True)
class SchemaStatus:
    current: tuple[str, ...]  # the revisions stamped in the database; () when it has none
    head: tuple[str, ...]  # what this code's migration scripts end at

    @property
    def at_head(self) -> bool:
        return set(self.current) == set(self.head)

    def describe(self) -> str:
        """What is wrong and what to run, for a start-up refusal or a readiness answer."""
        found = ", ".join(self.current) if self.current else "no Runlane schema"
        return (f"the database has {found}, this Runlane needs revision {', '.join(self.head)}: "
                "run `runlane migrate` (or set RUNLANE_AUTO_MIGRATE=true to migrate on start)")


@lru_cache(maxsize=1)
def head_revisions() -> tuple[str, ...]:
    """The heads of the migration scripts installed with this code (they cannot change while
    the process runs, and parsing them costs milliseconds: once per process)."""
    with quiet_alembic():
        from alembic.script import ScriptDirectory  # noqa: PLC0415 - start-up and readyz ask

        return tuple(sorted(ScriptDirectory(str(MIGRATIONS)).get_heads()))


def schema_status(engine: Engine) -> SchemaStatus:
    """The revisions stamped in the database at `engine` next to the code's heads.

    Raises:
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    with quiet_alembic():
        from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
        connection.execute(text("SELECT 1"))
    return SchemaStatus(current=tuple(sorted(current)), head=head_revisions())


def require_current_schema(url: str, *, auto_migrate: bool = False) -> None:
    """Return when the database at `url` is at head, migrating first if `auto_migrate`.

    Raises:
        SchemaNotCurrent: not at head (and not asked to migrate), or a SQLite file that cannot
            be opened, with the command to run.
        sqlalchemy.exc.OperationalError: a database server cannot be reached.
    """
    engine = make_engine(url)
    try:
        try:
            status = schema_status(engine)
        except OperationalError as exc:
            if engine.dialect.name != "sqlite":
                raise
            if auto_migrate:  # migrate creates the file's folder
                _migrate_once(url, engine)
                return
            # A local file that cannot be opened (its folder is missing) holds no schema.
            raise SchemaNotCurrent(f"cannot open the SQLite database {engine.url.database} "
                                   f"({exc.orig}): run `runlane migrate`, which creates it, "
                                   "or set RUNLANE_AUTO_MIGRATE=true") from exc
        if status.at_head:
            return
        if auto_migrate:
            _migrate_once(url, engine)
            return
        raise SchemaNotCurrent(status.describe())
    finally:
        engine.dispose()


def _migrate_once(url: str, engine: Engine) -> None:
    """Migrate under the migration lock; when several processes start at once, the first
    migrates and the others, let in after it, find the schema at head and carry on."""
    with migration_lock(url):
        try:
            if schema_status(engine).at_head:
                return
        except OperationalError:
            pass  # a SQLite file not there yet: migrating creates it
        try:
            migrate(url, lock=False)
        except Exception as exc:
            status = schema_status(engine)
            if not status.at_head:
                raise SchemaNotCurrent(f"migrating on start failed ({exc}); "
                                       + status.describe()) from exc


def probe_write(engine: Engine) -> None:
    """Write to the database, so that a database that reads but cannot write is not ready.

    SQLite is asked to commit a one-page no-op update: with WAL, a write that is rolled back
    never reaches the disk, and a failing disk (or a file system gone read-only) shows only
    on commit. A server database is asked to write and roll back, which a read-only
    (standby, read-only transaction) database refuses; it keeps no row version behind.

    Raises:
        sqlalchemy.exc.DBAPIError: the database cannot write (or cannot be reached).
    """
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql(f"PRAGMA busy_timeout={PROBE_LOCK_TIMEOUT_MS}")
            try:
                connection.execute(_NO_OP_WRITE)
                connection.commit()
            finally:
                connection.rollback()
                connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            return
        with connection.begin() as transaction:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SET LOCAL lock_timeout = {PROBE_LOCK_TIMEOUT_MS}")
            connection.execute(_NO_OP_WRITE)
            transaction.rollback()

"""Alembic environment: runs against the engine handed in by `storage.db.migrate`."""
from __future__ import annotations

from alembic import context

from storage.db import make_engine
from storage.models import Base

config = context.config
engine = config.attributes.get("engine") or make_engine(
    config.get_main_option("sqlalchemy.url") or "")

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode copies a table, drops the original and renames the copy. With foreign keys
        # enforced, SQLite's DROP TABLE deletes every row first, and `events` (ON DELETE
        # CASCADE) lost its whole log when `runs` was copied (Alembic's batch docs: the pragma
        # must be off meanwhile). It only takes effect outside a transaction: before migrating.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
    if sqlite:
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()
        if broken:  # a migration left rows pointing nowhere: stop before the app runs on them
            raise RuntimeError(f"foreign key check failed after migrating: {broken[:5]}")

"""Alembic environment: runs against the engine handed in by `storage.db.migrate`."""
from __future__ import annotations

from alembic import context

from storage.db import make_engine
from storage.models import Base

config = context.config
engine = config.attributes.get("engine") or make_engine(config.get_main_option("sqlalchemy.url") or "")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()

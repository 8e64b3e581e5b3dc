"""Fixtures for the tests that need PostgreSQL itself (row locks, server connections), not
whichever database the suite runs on."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from storage.db import make_engine, migrate

MACHINE_POSTGRES = "postgresql://postgres@127.0.0.1/test"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """RUNLANE_TEST_DATABASE_URL when it names a PostgreSQL, else the one this project's
    machines run (127.0.0.1:5432, database `test`), migrated; the test is skipped when there
    is none."""
    url = os.environ.get("RUNLANE_TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        url = MACHINE_POSTGRES
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError:
        pytest.skip("no PostgreSQL to run against")
    finally:
        engine.dispose()
    migrate(url)
    yield url

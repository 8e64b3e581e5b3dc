"""Fixtures for the tests that talk to a database directly: the suite's own (`db`), and
PostgreSQL itself (row locks, server connections) rather than whichever database the suite
runs on (`postgres_url`)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.db import Database, migrate
from tests.support import find_postgres


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The suite's database (migrated), through a Database of this test's own."""
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server tests.support.find_postgres() names, migrated; the test is
    skipped when there is none."""
    url = find_postgres()
    if url is None:
        pytest.skip("no PostgreSQL to run against")
    migrate(url)
    return url

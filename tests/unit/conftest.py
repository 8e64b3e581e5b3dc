"""Unit tests stand alone: no Redis, no database, no server, no worker. Enforced here, not
hoped for:

- a unit test whose fixtures include a real service (`redis_url`, `database_url`,
  `runlane_env`, and so `app`, `live_server`, `runlane_worker`, ...) fails before any of them
  starts;
- a unit test that connects to a Redis (redis-py, which Celery's Redis transport uses too),
  starts an embedded one, or connects to a database (any SQLAlchemy engine, SQLite files
  included) fails at that moment;
- a unit test that leaves a new redis-server process behind (started any other way) fails;
- each unit test sees an environment of its own: no REDIS_URL, DATABASE_URL or RUNLANE_*
  setting of the host (or of a session that also runs integration tests) leaks in.

A test that truly needs one of these belongs in tests/integration.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis.connection
from sqlalchemy.engine import Engine

from runlane.embedded import EmbeddedRedis

SERVICES = frozenset({"redis_url", "database_url", "runlane_env", "postgres_url",
                      "celery_session_worker"})
MOVE_IT = "unit tests use no Redis or database: fake it, or move the test to tests/integration"
SECRET = "unit-secret-" + "x" * 40


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of the test is set up, so the service never starts."""
    wanted = sorted(SERVICES.intersection(getattr(item, "fixturenames", ())))
    if wanted:
        pytest.fail(f"{item.nodeid} uses {', '.join(wanted)}; {MOVE_IT}", pytrace=False)


def _refuse(what: str, original: Any, background: set[threading.Thread]) -> Any:
    """`original`, refused to the test and to the threads it starts. Threads already running
    when it began (an in-process worker and its reaper, left by integration tests of the
    same session) are not the unit test's doing and go on as before."""
    def refused(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() in background:
            return original(*args, **kwargs)
        fail(what)

    return refused


def fail(what: str) -> NoReturn:
    pytest.fail(f"a unit test {what}; {MOVE_IT}", pytrace=False)


def redis_servers(pid: int | None = None) -> set[int]:
    """The redis-server processes below this one (read from /proc: children of every thread)."""
    found: set[int] = set()
    stack = [os.getpid() if pid is None else pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                stack.append(child)
                try:
                    if Path(f"/proc/{child}/comm").read_text().strip() == "redis-server":
                        found.add(child)
                except OSError:
                    pass
    return found


@pytest.fixture(autouse=True)
def stand_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in list(os.environ):
        if (key.startswith("RUNLANE_") and not key.startswith("RUNLANE_TEST_")) or key in (
                "REDIS_URL", "DATABASE_URL", "CELERY_BROKER_URL"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RUNLANE_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("RUNLANE_SECRET_KEY", SECRET)
    monkeypatch.setenv("RUNLANE_ENV", "development")
    background = set(threading.enumerate()) - {threading.current_thread()}
    for owner, name, what in (
            (redis.connection.AbstractConnection, "connect", "connected to Redis"),
            (EmbeddedRedis, "start", "started a redis-server"),
            (Engine, "connect", "connected to a database"),
            (Engine, "raw_connection", "connected to a database")):
        monkeypatch.setattr(owner, name, _refuse(what, getattr(owner, name), background))
    before = redis_servers()
    yield
    left = redis_servers() - before
    for pid in left:  # ended here, so the rest of the session is not left with them
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        pytest.fail(f"a unit test left redis-server processes {sorted(left)}; {MOVE_IT}",
                    pytrace=False)

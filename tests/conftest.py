"""Real services for every test outside tests/unit: embedded redis-server, SQLite (or
PostgreSQL when RUNLANE_TEST_DATABASE_URL says so), an in-process Celery worker that consumes
from that Redis (celery.contrib.pytest's session worker, which the pytest-celery plugin
registers), and the app served on a loopback port. Unit tests get none of them
(tests/unit/conftest.py refuses them)."""
from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from runlane.embedded import EmbeddedRedis
from runlane.settings import load
from tests.support import User

TEST_SECRET = "test-secret-" + "x" * 40
UNIT = Path(__file__).parent / "unit"


def is_unit(item: pytest.Item) -> bool:
    return Path(str(item.fspath)).is_relative_to(UNIT)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("RUNLANE_TEST_REDIS_URL")
    if external:
        yield external
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from storage.db import migrate

    url = os.environ.get("RUNLANE_TEST_DATABASE_URL") or (
        f"sqlite:///{tmp_path_factory.mktemp('db') / 'runlane.db'}"
    )
    migrate(url)
    return url


@pytest.fixture(scope="session", autouse=True)
def services(request: pytest.FixtureRequest) -> None:
    """`runlane_env` (and so Redis and the database) for a session that collected any test
    outside tests/unit, before the first test; a session of unit tests alone starts nothing."""
    if not all(is_unit(item) for item in request.session.items):
        request.getfixturevalue("runlane_env")


@pytest.fixture(scope="session")
def runlane_env(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str
) -> Iterator[dict[str, str]]:
    """One environment for this process and every child it starts; nothing from the host
    leaks in."""
    instance = tmp_path_factory.mktemp("instance")
    env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "RUNLANE_INSTANCE_PATH": str(instance),
        "RUNLANE_SECRET_KEY": TEST_SECRET,
        "RUNLANE_ENV": "development",
        # Short lifecycle timings so lease loss and cancel grace are observed in seconds.
        "RUNLANE_HEARTBEAT_INTERVAL": "0.5",
        "RUNLANE_CANCEL_GRACE": "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if (key.startswith("RUNLANE_") and key not in env
                    and not key.startswith("RUNLANE_TEST_")):
                mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        yield env


# celery.contrib.pytest's fixtures, set up for Runlane's own app: `celery_session_worker`
# is then a real worker thread pool in this process consuming the Redis broker.
@pytest.fixture(scope="session")
def celery_session_app(runlane_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """The project's Celery app with its own configuration (celeryconfig.py reading
    runlane_env), not the plugin's test app: never eager, the real broker."""
    import tasks

    assert not tasks.app.conf.task_always_eager
    return tasks.app


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "threads"


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, object]:
    # No ping check: it waits for the ping task's result, and Runlane's app keeps no results.
    return {"concurrency": 6, "perform_ping_check": False, "loglevel": "WARNING",
            "shutdown_timeout": 10}


@pytest.fixture(scope="session")
def runlane_worker(celery_session_worker: object) -> object:
    """The in-process worker with its reaper running: the CLI worker starts the reaper on
    worker_ready, which the test controller never sends."""
    from tasks.worker import current

    current().start_reaper()
    return celery_session_worker


@pytest.fixture(scope="session")
def app(runlane_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from webapp import create_app

    app = create_app()
    yield app
    app.extensions["runlane"].close()


@contextmanager
def serving(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Serve `app` on a real loopback port (werkzeug, threaded) for HTTP and websockets."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with serving(app) as url:
        yield url


@pytest.fixture
def server_with():  # type: ignore[no-untyped-def]
    """Start another app with Settings overrides; yields a function returning its base URL."""
    from webapp import create_app

    with ExitStack() as stack:
        def start(**overrides: object) -> str:
            app = create_app(overrides)
            stack.callback(app.extensions["runlane"].close)
            return stack.enter_context(serving(app))

        yield start


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


class Tokens:
    """Mints users with fresh ids so tests never see each other's rows."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def user(self, name: str = "user") -> User:
        from runlane.tokens import issue_token

        user_id = f"{name}-{uuid.uuid4().hex[:8]}"
        settings = load()
        return User(user_id, issue_token(settings, settings.jwt_secret(), user_id), self.base_url)


@pytest.fixture
def tokens(live_server: str) -> Tokens:
    return Tokens(live_server)


@pytest.fixture
def users(tokens: Tokens, runlane_worker: object) -> Tokens:
    """Like `tokens`, with the worker running so submitted runs execute."""
    return tokens


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)

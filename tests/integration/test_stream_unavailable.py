"""When the event stream cannot be subscribed to (Redis unreachable for this web process), the
routes that wait on it answer 503 problem+json with Retry-After, before anything is submitted
or any 200 is sent: a 500 would invite a blind retry, a 200 would end in a truncated stream.

The web process under test gets a REDIS_URL on a loopback port where nothing listens; the
broker and the database are the suite's real ones.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.conftest import Tokens, serving
from tests.processes import free_port
from tests.support import User


@pytest.fixture
def dark(server_with, tokens: Tokens, runlane_worker: object) -> User:
    """A user on a web process whose Redis is a port where nothing listens."""
    return tokens.user("dark").on(server_with(redis_url=f"redis://127.0.0.1:{free_port()}/0"))


def _assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 503 and body["title"] == "Event stream unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert "Traceback" not in response.text


@pytest.mark.parametrize("prefix", ["/api/agents", "/api/agent"])
def test_v1_execute_answers_503_and_submits_nothing(dark: User, prefix: str) -> None:
    response = dark.post(f"{prefix}/execute", json={"agent_type": "echo", "message": "hi"})
    _assert_unavailable(response)
    assert response.headers["Deprecation"].startswith("@")  # still a v1 answer
    # Nothing was submitted, so retrying on the 503 cannot run the agent twice.
    assert dark.get("/api/agents/v2/runs").json()["items"] == []


def test_v1_stream_answers_503_problem_instead_of_a_truncated_200(dark: User) -> None:
    response = requests.post(f"{dark.base_url}/api/agents/stream", headers=dark.headers,
                             json={"query": "stream me"}, stream=True, timeout=30)
    try:
        _assert_unavailable(response)
    finally:
        response.close()
    assert dark.get("/api/agents/v2/runs").json()["items"] == []


def test_v2_sse_answers_503_problem_instead_of_a_truncated_200(
    dark: User, users: Tokens,
) -> None:
    run = users.user().on(dark.base_url)  # submission works: it needs the broker, not the router
    submitted = run.submit("t-sse", "echo", "hi")
    response = requests.get(f"{run.base_url}/api/agents/v2/{submitted['run_id']}/events",
                            headers=run.headers | {"Accept": "text/event-stream"},
                            stream=True, timeout=30)
    try:
        _assert_unavailable(response)
    finally:
        response.close()


def test_internal_errors_still_answer_a_bare_500() -> None:
    """Only deliberate 5xx errors (503 and the like) pass through: an internal RunlaneError
    (status 500) and an unexpected exception keep saying nothing about themselves."""
    from flask import Flask

    from domain.errors import ConfigurationError
    from webapp import problems

    app = Flask("probe")
    problems.init_app(app)

    @app.get("/boom")
    def boom() -> None:
        raise ConfigurationError("secret-key-path=/etc/runlane/key")

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("internal detail")

    client = app.test_client()
    for path in ("/boom", "/crash"):
        answer = client.get(path)
        assert answer.status_code == 500
        assert answer.json["title"] == "Internal error"
        assert "secret-key-path" not in answer.text and "internal detail" not in answer.text


@pytest.fixture
def served_app(runlane_env: dict[str, str], runlane_worker: object) -> Iterator[tuple[object, str]]:
    from webapp import create_app

    app = create_app()
    try:
        with serving(app) as url:
            yield app, url
    finally:
        app.extensions["runlane"].close()


def test_sse_detaches_when_the_stream_ends_and_when_the_response_is_closed_unread(
    served_app: tuple[object, str], tokens: Tokens,
) -> None:
    app, url = served_app
    router = app.extensions["runlane"].router  # type: ignore[attr-defined]
    alice = tokens.user("alice").on(url)
    run = alice.submit("t-detach", "echo", "hi")
    alice.wait_for_state(run["run_id"], {"completed"})
    with requests.get(f"{url}/api/agents/v2/{run['run_id']}/events",
                      headers=alice.headers | {"Accept": "text/event-stream"},
                      stream=True, timeout=30) as response:
        assert response.status_code == 200
        assert "event: agent_completed" in response.text  # read to the end
    assert router.stats()["sockets"] == 0

    # A client gone before the first frame: the WSGI server closes the response unread.
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=f"/api/agents/v2/{run['run_id']}/events",
                             headers=alice.headers | {"Accept": "text/event-stream"}).get_environ()
    started: list[str] = []
    body = app.wsgi_app(environ, lambda status, headers, exc_info=None: started.append(status))  # type: ignore[attr-defined]
    assert started == ["200 OK"]
    assert router.stats()["sockets"] == 1  # attached before the headers were sent
    body.close()
    assert router.stats()["sockets"] == 0

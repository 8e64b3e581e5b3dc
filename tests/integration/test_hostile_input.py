"""Numbers, dates, ids and query strings chosen by a hostile client: each is refused at the edge
with a problem+json answer (never a 500, never a forged log line), on SQLite and PostgreSQL."""
from __future__ import annotations

import base64
import io
import json
import logging
import uuid

import pytest
import requests

from domain.events import MAX_SEQ
from runlane import logs
from runlane.settings import load
from tests.support import User
from webapp.runs import CURSOR_MAX_LENGTH

PROBLEM = "application/problem+json"


def assert_problem(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM), response.headers
    assert "Traceback" not in response.text
    body = response.json()
    assert body["status"] == status
    return body  # type: ignore[no-any-return]


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.fixture
def alice(tokens) -> User:  # type: ignore[no-untyped-def]
    return tokens.user("alice")


@pytest.fixture
def run_id(alice: User) -> str:
    """A run of alice's (no worker: it stays queued, which is all these tests need)."""
    run: dict = alice.submit(f"t-{uuid.uuid4().hex[:8]}", "echo", "hi")
    return run["run_id"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("value", [b"\xb2", b"9" * 5000, b"9" * 20, b"-1", b"+1", b"1 2", b"1_000",
                                   str(MAX_SEQ + 1).encode()])
def test_a_last_event_id_that_is_not_a_seq_this_server_can_hold_is_400(alice, run_id, value):
    response = requests.get(
        f"{alice.base_url}/api/agents/v2/{run_id}/events", timeout=10, stream=True,
        headers={**alice.headers, "Accept": "text/event-stream", "Last-Event-ID": value},
    )
    with response:
        assert_problem(response, 400)


@pytest.mark.parametrize("value", [str(MAX_SEQ + 1), "9" * 20, "9" * 5000, "-1", "1.5", "²"])
def test_an_after_past_the_largest_seq_is_400(alice, run_id, value):
    assert_problem(alice.get(f"/api/agents/v2/{run_id}/events", params={"after": value}), 400)


def test_the_largest_seq_is_a_valid_after(alice, run_id):
    response = alice.get(f"/api/agents/v2/{run_id}/events", params={"after": str(MAX_SEQ)})
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_after": MAX_SEQ}


@pytest.mark.parametrize("cursor", [
    cursor_of(["0001-01-01T00:00:00+14:00", "abc"]),  # before year 1 once in UTC
    cursor_of(["9999-12-31T23:59:59-14:00", "abc"]),  # after year 9999 once in UTC
    cursor_of(["2026-01-01T00:00:00+00:00", "a\u0000b"]),  # a run id no run can have
    cursor_of(["2026-01-01T00:00:00+00:00", "abc\n"]),
    cursor_of(["2026-01-01T00:00:00+00:00", 12]),
    cursor_of({"created": "2026-01-01T00:00:00+00:00"}),
    "A" * (CURSOR_MAX_LENGTH + 1),  # longer than any cursor a page gives out
    "A" * 512,
])
@pytest.mark.parametrize("route", ["/api/agents/v2/runs", "/api/agents/v2/thread/{thread}/runs"])
def test_a_cursor_that_no_page_could_have_issued_is_400(alice, cursor, route):
    thread = alice.submit(f"t-{uuid.uuid4().hex[:8]}", "echo", "hi")["thread_id"]
    response = alice.get(route.format(thread=thread), params={"cursor": cursor})
    assert_problem(response, 400)


@pytest.mark.parametrize("query", ["limit=", "limit=1&limit=2", "cursor=&cursor=", "limit=%201"])
@pytest.mark.parametrize("route", ["/api/agents/v2/runs", "/api/agents/thread/{thread}/runs"])
def test_an_empty_or_repeated_query_number_is_400(alice, query, route):
    thread = alice.submit(f"t-{uuid.uuid4().hex[:8]}", "echo", "hi")["thread_id"]
    assert_problem(alice.get(route.format(thread=thread) + "?" + query), 400)


@pytest.mark.parametrize("route", [
    "/api/agents/v2/runs", "/api/agents/v2/thread/{thread}/runs", "/api/agents/v2/{run}/events",
    "/api/agents/v2/{run}/state", "/api/agents/thread/{thread}/runs", "/api/agent/v2/runs",
])
def test_an_unknown_query_parameter_is_400_naming_it(alice, route):
    run = alice.submit(f"t-{uuid.uuid4().hex[:8]}", "echo", "hi")
    url = route.format(thread=run["thread_id"], run=run["run_id"])
    body = assert_problem(alice.get(url, params={"status": "failed"}), 400)
    assert "status" in body["detail"]


def test_documented_query_parameters_still_pass(alice, run_id):
    assert alice.get("/api/agents/v2/runs", params={"limit": "5"}).status_code == 200
    assert alice.get(f"/api/agents/v2/{run_id}/events",
                     params={"after": "0", "limit": "10"}).status_code == 200


@pytest.mark.parametrize("path", [
    "/api/agents/v2/{run}%0A/state", "/api/agents/v2/thread/t1%0A/runs",
    "/api/agents/{run}%0A/status", "/api/agents/v2/{run}%0A/events",
])
def test_a_path_id_with_a_trailing_newline_is_400(alice, run_id, path):
    assert_problem(alice.get(path.format(run=run_id)), 400)


def test_a_submission_to_a_thread_id_with_a_trailing_newline_is_400_and_writes_nothing(alice):
    response = alice.post("/api/agents/v2/thread/t1%0A/runs", json={"agent": "echo", "input": 1})
    assert_problem(response, 400)
    assert alice.get("/api/agents/v2/runs").json()["items"] == []


def test_a_token_whose_subject_ends_with_a_newline_is_401(live_server):
    import jwt

    from tests.conftest import TEST_SECRET

    settings = load()
    claims = {"sub": "alice\n", "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
              "iat": 1, "nbf": 1, "exp": 2**40}
    token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    response = requests.get(f"{live_server}/api/agents/v2/agents", timeout=10,
                            headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401)


def test_a_request_cannot_forge_a_line_in_the_text_log(app):
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logs.adopt(handler, load({"log_format": "text"}))
    access = logging.getLogger("runlane.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        forged = "abc%0A2026-12-02 00:00:00,000 INFO runlane.access: FORGED"
        with app.test_client() as client:
            response = client.get(f"/api/agents/v2/{forged}/state")
            assert response.status_code in (400, 401)
            response.close()  # the access line is written once the answer is sent
    finally:
        access.setLevel(level)
        access.removeHandler(handler)
    # Other tests' requests may still be closing: look at the lines that mention this one.
    written = [line for line in buf.getvalue().splitlines() if "FORGED" in line]
    assert len(written) == 1, written
    assert "GET /api/agents/v2/abc\\n2026-12-02 00:00:00,000 INFO" in written[0]


def test_the_docs_page_answers_with_a_trailing_slash_and_the_favicon_is_not_404(live_server):
    docs = requests.get(f"{live_server}/api/docs/", timeout=10)
    assert docs.status_code == 200 and "text/html" in docs.headers["Content-Type"]
    icon = requests.get(f"{live_server}/favicon.ico", timeout=10)
    assert icon.status_code in (200, 204)
    if icon.status_code == 200:
        assert icon.headers["Content-Type"].startswith("image/")


@pytest.mark.parametrize("raw", [
    b'{"agent": "echo", "input": 1e400}', b'{"agent": "echo", "input": -1e400}',
    b'{"agent": "echo", "input": NaN}', b'{"agent": "echo", "input": Infinity}',
    b'{"agent": "echo", "input": 1, "metadata": {"n": -Infinity}}',
])
def test_a_number_json_cannot_store_is_400_and_writes_nothing(alice, raw):
    thread = f"t-{uuid.uuid4().hex[:8]}"
    response = requests.post(f"{alice.base_url}/api/agents/v2/thread/{thread}/runs", data=raw,
                             headers={**alice.headers, "Content-Type": "application/json"},
                             timeout=10)
    assert_problem(response, 400)
    assert alice.get(f"/api/agents/v2/thread/{thread}/runs").status_code == 404

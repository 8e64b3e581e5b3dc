"""The v2 HTTP contract: statuses, shapes, pagination, both prefixes, problem+json errors."""
from __future__ import annotations

import pytest
import requests

PROBLEM = "application/problem+json"


def assert_problem(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"]
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize("prefix", ["/api/agents", "/api/agent"])
def test_submit_answers_202_with_run_resource_and_location_on_both_prefixes(tokens, prefix):
    alice = tokens.user("alice")
    response = alice.post(f"{prefix}/v2/thread/t-1/runs", json={"agent": "echo", "input": {"a": 1}})
    assert response.status_code == 202
    run = response.json()
    assert run["status"] == "queued" and run["thread_id"] == "t-1" and run["agent"] == "echo"
    assert run["input"] == {"a": 1} and run["last_seq"] == 0
    assert response.headers["Location"] == f"{prefix}/v2/{run['run_id']}/state"
    state = alice.get(response.headers["Location"])
    assert state.status_code == 200 and state.json()["run_id"] == run["run_id"]


def test_state_has_every_documented_field(tokens):
    alice = tokens.user("alice")
    run = alice.submit("t1", "echo", "x")
    state = alice.get(f"/api/agents/v2/{run['run_id']}/state").json()
    for field in ("run_id", "thread_id", "agent", "status", "input", "output", "error",
                  "created_at", "started_at", "finished_at", "last_seq"):
        assert field in state


def test_another_users_run_and_thread_answer_404_like_missing_ones(tokens):
    alice, bob = tokens.user("alice"), tokens.user("bob")
    run = alice.submit("shared-name", "echo", "secret")
    foreign = bob.get(f"/api/agents/v2/{run['run_id']}/state")
    missing = bob.get("/api/agents/v2/0123456789abcdef0123456789abcdef/state")
    assert assert_problem(foreign, 404)["title"] == assert_problem(missing, 404)["title"]
    assert "secret" not in foreign.text
    assert_problem(bob.get("/api/agents/v2/thread/shared-name/runs"), 404)
    # The same thread id is Bob's own, separate thread once he uses it.
    bob.submit("shared-name", "echo", "bob's")
    listing = bob.get("/api/agents/v2/thread/shared-name/runs").json()["items"]
    assert [r["input"] for r in listing] == ["bob's"]


def test_thread_runs_are_newest_first_and_paginated_by_cursor(tokens):
    alice = tokens.user("alice")
    ids = [alice.submit("paged", "echo", i)["run_id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = alice.get("/api/agents/v2/thread/paged/runs", params=params).json()
        assert len(page["items"]) <= 2
        seen += [r["run_id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_all_runs_lists_every_thread_of_the_caller_and_nothing_of_anyone_else(tokens):
    alice, bob = tokens.user("alice"), tokens.user("bob")
    ids = [alice.submit(thread, "echo", i)["run_id"] for i, thread in enumerate(["a", "b", "a"])]
    bob.submit("a", "echo", "bob's")
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = alice.get("/api/agents/v2/runs", params=params).json()
        seen += [(r["run_id"], r["thread_id"]) for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(list(zip(ids, ["a", "b", "a"], strict=True))))
    assert tokens.user("carol").get("/api/agents/v2/runs").json()["items"] == []


def test_agents_lists_echo_and_demo_with_input_schemas(tokens):
    agents = {a["name"]: a for a in tokens.user().get("/api/agents/v2/agents").json()["items"]}
    assert {"echo", "demo"} <= set(agents)
    assert agents["demo"]["input_schema"]["properties"]["steps"]["type"] == "integer"
    assert agents["demo"]["description"]


def test_unknown_agent_is_422(tokens):
    response = tokens.user().post("/api/agents/v2/thread/t/runs", json={"agent": "nope"})
    body = assert_problem(response, 422)
    assert body["errors"][0]["path"] == "/agent"


def test_input_failing_the_agent_schema_is_422_with_paths(tokens):
    response = tokens.user().post(
        "/api/agents/v2/thread/t/runs", json={"agent": "demo", "input": {"steps": "many"}}
    )
    assert "/input/steps" in [e["path"] for e in assert_problem(response, 422)["errors"]]


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1,2]", b"\xff\xfe"])
def test_malformed_json_is_400(tokens, body):
    assert_problem(tokens.user().post("/api/agents/v2/thread/t/runs", data=body), 400)


def test_wrongly_typed_fields_are_422(tokens):
    response = tokens.user().post("/api/agents/v2/thread/t/runs", json={"agent": 5, "extra": 1})
    paths = {e["path"] for e in assert_problem(response, 422)["errors"]}
    assert {"/agent", "/extra"} <= paths


@pytest.mark.parametrize("thread", ["a" * 65, "bad.id", "sp ace", "%24x"])
def test_invalid_thread_ids_are_400(tokens, thread):
    response = tokens.user().post(f"/api/agents/v2/thread/{thread}/runs", json={"agent": "echo"})
    assert_problem(response, 400)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"},
     {"Authorization": "Bearer "}],
)
def test_missing_or_invalid_token_is_401(live_server, headers):
    response = requests.post(
        f"{live_server}/api/agents/v2/thread/t/runs", json={"agent": "echo"}, headers=headers,
        timeout=5,
    )
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_signed_with_another_secret_is_401(live_server):
    import jwt

    forged = jwt.encode({"sub": "alice", "iss": "runlane", "aud": "runlane", "iat": 0,
                         "exp": 4102444800}, "not-the-secret-" + "y" * 40, algorithm="HS256")
    response = requests.get(f"{live_server}/api/agents/v2/agents",
                            headers={"Authorization": f"Bearer {forged}"}, timeout=5)
    assert_problem(response, 401)


def test_unknown_route_and_wrong_method_are_problems(tokens):
    alice = tokens.user()
    assert_problem(alice.get("/api/agents/v2/nowhere/at/all"), 404)
    assert_problem(alice.get("/api/agents/v2/thread/t/runs/x"), 404)
    assert_problem(requests.delete(f"{alice.base_url}/api/agents/v2/agents", timeout=5), 405)


def test_body_over_the_size_limit_is_413(tokens):
    big = b'{"agent":"echo","input":"' + b"x" * (1024 * 1024 + 10) + b'"}'
    assert_problem(tokens.user().post("/api/agents/v2/thread/t/runs", data=big), 413)


def test_rejected_submission_leaves_no_thread_behind(tokens):
    alice = tokens.user()
    alice.post("/api/agents/v2/thread/ghost/runs", json={"agent": "nope"})
    assert_problem(alice.get("/api/agents/v2/thread/ghost/runs"), 404)


def test_bad_limit_and_cursor_are_400(tokens):
    alice = tokens.user()
    alice.submit("lim", "echo", 1)
    assert_problem(alice.get("/api/agents/v2/thread/lim/runs", params={"limit": 0}), 400)
    assert_problem(alice.get("/api/agents/v2/thread/lim/runs", params={"limit": "x"}), 400)
    assert_problem(alice.get("/api/agents/v2/thread/lim/runs", params={"cursor": "garbage!"}), 400)


def test_healthz_and_readyz_answer(live_server):
    assert requests.get(f"{live_server}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{live_server}/readyz", timeout=5).status_code == 200

"""The legacy v1 contract, served through the FactoryAdapter onto the v2 path."""
from __future__ import annotations

import json
import logging
from email.utils import parsedate_to_datetime

import pytest
import requests

from tests.support import assert_consecutive

PREFIXES = ["/api/agents", "/api/agent"]


def assert_deprecated(response: requests.Response, successor: str) -> None:
    assert response.headers["Deprecation"].startswith("@")
    int(response.headers["Deprecation"][1:])
    assert parsedate_to_datetime(response.headers["Sunset"]).year >= 2026
    assert response.headers["Link"] == f'<{successor}>; rel="successor-version"'


@pytest.mark.parametrize("prefix", PREFIXES)
def test_execute_waits_for_the_run_and_returns_output_and_events(users, prefix):
    alice = users.user("alice")
    response = alice.post(f"{prefix}/execute", json={"agent_type": "echo", "message": "hi"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["status"] == "completed" and body["output"] == "hi"
    assert body["error"] is None and body["thread_id"].startswith("v1-")
    assert [e["type"] for e in body["events"]] == ["agent_started", "agent_completed"]
    assert [e["seq"] for e in body["events"]] == [1, 2]
    assert_deprecated(response, "/api/agents/v2/thread/{thread_id}/runs")


def test_execute_reports_a_failed_run(users):
    alice = users.user("alice")
    response = alice.post("/api/agents/execute", json={"agent_type": "nope", "message": "x"})
    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert "Deprecation" in response.headers


def test_execute_answers_202_when_the_timeout_passes_first(users):
    alice = users.user("alice")
    # Four running runs: Alice is at her concurrency limit, so the v1 run waits past its timeout.
    blockers = [alice.submit(f"busy-{i}", "demo", {"steps": 1, "delay_ms": 3000})["run_id"]
                for i in range(4)]
    for run_id in blockers:
        alice.wait_for_state(run_id, {"running"})
    response = alice.post(
        "/api/agents/execute", json={"agent_type": "demo", "message": "x", "timeout": 0.2}
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"run_id", "thread_id", "status"}
    assert body["status"] in ("queued", "running")
    assert alice.wait_for_state(body["run_id"], {"completed"})["status"] == "completed"
    for run_id in blockers:
        alice.wait_for_state(run_id, {"completed"})


@pytest.mark.parametrize("timeout", [0, 121, "soon"])
def test_execute_rejects_out_of_range_timeouts(users, timeout):
    response = users.user().post("/api/agents/execute",
                                 json={"agent_type": "echo", "message": "x", "timeout": timeout})
    assert response.status_code == 422


@pytest.mark.parametrize("prefix", PREFIXES)
def test_run_agent_starts_a_run_visible_through_v2(users, prefix):
    alice = users.user("alice")
    response = alice.post(f"{prefix}/run_agent",
                          json={"query": "count these words", "id": "legacy-1"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "started" and body["thread_id"] == "legacy-1"
    state = alice.wait_for_state(body["run_id"], {"completed"})
    assert state["agent"] == "demo" and state["input"] == {"text": "count these words"}
    assert state["metadata"] == {"api": "v1", "route": "run_agent"}
    assert_deprecated(response, "/api/agents/v2/thread/{thread_id}/runs")


def test_message_uses_the_thread_and_v1_reads_answer_in_v1_shapes(users):
    alice = users.user("alice")
    started = alice.post("/api/agent/message", json={"message": "hello there", "thread_id": "chat"})
    assert started.status_code == 200
    run_id = started.json()["run_id"]
    alice.wait_for_state(run_id, {"completed"})

    status = alice.get(f"/api/agent/{run_id}/status")
    assert status.json() == {"run_id": run_id, "status": "completed", "is_complete": True,
                             "error": None}
    assert_deprecated(status, "/api/agents/v2/{run_id}/state")

    state = alice.get(f"/api/agents/{run_id}/state").json()
    assert state["agent_type"] == "demo" and state["result"]["steps"] == 3
    assert state["completed_at"] and state["thread_id"] == "chat"

    runs = alice.get("/api/agents/thread/chat/runs", params={"limit": 5}).json()
    assert runs["thread_id"] == "chat" and [r["run_id"] for r in runs["runs"]] == [run_id]


def test_v1_reads_of_another_users_run_are_404(users):
    alice, bob = users.user("alice"), users.user("bob")
    run_id = alice.post("/api/agents/message", json={"message": "mine"}).json()["run_id"]
    for path in (f"/api/agents/{run_id}/status", f"/api/agents/{run_id}/state"):
        assert bob.get(path).status_code == 404
    assert bob.get("/api/agents/thread/chat/runs").status_code == 404


def test_v1_run_produces_the_same_events_as_a_v2_run(users):
    alice = users.user("alice")
    sock = alice.socket()
    sock.recv_json()
    v1 = alice.post("/api/agents/message",
                    json={"message": "same input", "thread_id": "cmp"}).json()
    v2 = alice.submit("cmp", "demo", {"text": "same input"})
    events = sock.events_until_done({v1["run_id"], v2["run_id"]})
    sock.close()
    one, two = assert_consecutive(events, v1["run_id"]), assert_consecutive(events, v2["run_id"])
    assert [(e["type"], e["data"]) for e in one] == [(e["type"], e["data"]) for e in two]


def test_stream_sends_the_runs_real_events_as_sse_until_it_ends(users):
    alice = users.user("alice")
    response = requests.post(f"{alice.base_url}/api/agents/stream", headers=alice.headers,
                             json={"query": "stream me"}, stream=True, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert_deprecated(response, "/api/agents/v2/{run_id}/events")
    events = [json.loads(line[5:]) for line in response.iter_lines(decode_unicode=True)
              if line.startswith("data:")]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "agent_started" and events[-1]["type"] == "agent_completed"
    assert len(events) == 11


def test_factory_only_turns_v1_into_410_while_v2_keeps_working(server_with, tokens, runlane_worker):
    alice = tokens.user("alice").on(server_with(migration_mode="factory_only"))
    for prefix in PREFIXES:
        gone = alice.post(f"{prefix}/execute", json={"agent_type": "echo", "message": "x"})
        assert gone.status_code == 410
        assert gone.headers["Content-Type"].startswith("application/problem+json")
        assert gone.json()["successor"] == "/api/agents/v2/thread/{thread_id}/runs"
        assert alice.get(f"{prefix}/0123/status").status_code == 410
    run = alice.submit("t", "echo", "v2 still works")
    assert alice.wait_for_state(run["run_id"], {"completed"})["output"] == "v2 still works"


def test_per_route_override_retires_one_route_only(server_with, tokens, runlane_worker):
    alice = tokens.user("alice").on(server_with(migration_routes={"execute": "factory_only"}))
    retired = alice.post("/api/agents/execute", json={"agent_type": "echo", "message": "x"})
    assert retired.status_code == 410
    assert alice.post("/api/agents/message", json={"message": "x"}).status_code == 200
    report = alice.get("/api/agents/v2/migration").json()
    by_route = {r["route"]: r for r in report["routes"]}
    assert by_route["/api/agents/execute"]["factory_backed"] is False
    assert by_route["/api/agents/message"]["factory_backed"] is True


def test_startup_logs_the_mode_and_each_factory_backed_route(caplog, runlane_env):
    from webapp import create_app

    with caplog.at_level(logging.INFO, logger="webapp.migration"):
        app = create_app({"migration_routes": {"stream": "factory_only"}})
    app.extensions["runlane"].close()
    lines = [r.getMessage() for r in caplog.records if r.name == "webapp.migration"]
    assert lines[0] == "Migration Mode: factory_preferred"
    enabled = {line.split(": ", 1)[1] for line in lines[1:]}
    assert "/api/agents/execute" in enabled and "/api/agent/execute" in enabled
    assert "/api/agents/stream" not in enabled
    assert len(enabled) == 12  # 7 v1 routes on 2 prefixes, less the retired /stream pair


def test_migration_report_counts_v1_calls_across_web_processes(server_with, tokens, live_server):
    alice = tokens.user("alice")
    other = alice.on(server_with())  # a second web process sharing the same Redis

    def calls() -> int:
        report = alice.get("/api/agents/v2/migration").json()
        return next(r["calls"] for r in report["routes"]
                    if r["route"] == "/api/agent/<run_id>/status")

    before = calls()
    alice.get("/api/agent/abc/status")
    alice.get("/api/agent/abc/status")
    other.get("/api/agent/abc/status")
    assert calls() == before + 3
    report = other.get("/api/agents/v2/migration").json()
    assert report["mode"] == "factory_preferred"
    row = next(r for r in report["routes"] if r["route"] == "/api/agents/execute")
    assert row == row | {"version": "v1", "prefix": "/api/agents", "deprecated": True,
                         "factory_backed": True,
                         "successor": "/api/agents/v2/thread/{thread_id}/runs"}
    assert row["sunset"].startswith("2027")
    v2_row = next(r for r in report["routes"] if r["route"] == "/api/agent/v2/<run_id>/state")
    assert v2_row["version"] == "v2" and v2_row["deprecated"] is False and v2_row["calls"] is None


def test_migration_report_needs_a_token(live_server):
    assert requests.get(f"{live_server}/api/agents/v2/migration", timeout=5).status_code == 401

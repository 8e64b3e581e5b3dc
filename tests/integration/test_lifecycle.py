"""Run lifecycle with the in-process worker: cancel, idempotency, limits, thread strategies."""
from __future__ import annotations

import time

import pytest

from tests.support import wait_until


def state(user, run_id):  # type: ignore[no-untyped-def]
    return user.get(f"/api/agents/v2/{run_id}/state").json()


def test_cancelling_a_queued_run_means_it_never_starts(users):
    alice = users.user("alice")
    first = alice.submit("t", "demo", {"steps": 3, "delay_ms": 300})["run_id"]
    second = alice.submit("t", "echo", "never")["run_id"]  # waits behind `first` (same thread)
    response = alice.post(f"/api/agents/v2/{second}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert alice.wait_for_state(first, {"completed"})["status"] == "completed"
    # Kept: the thread is free now; proving `second` does NOT start means giving it the time
    # to (the worker takes a waiting run within milliseconds).
    time.sleep(0.5)
    final = state(alice, second)
    assert final["status"] == "cancelled" and final["attempt"] == 0 and final["started_at"] is None
    events = alice.get(f"/api/agents/v2/{second}/events").json()["items"]
    assert [e["type"] for e in events] == ["agent_cancelled"]


def test_cancelling_a_running_run_stops_it_at_its_next_step(users):
    alice = users.user("alice")
    sock = alice.socket()
    sock.recv_json()
    run = alice.submit("t", "demo", {"steps": 20, "delay_ms": 200})["run_id"]
    wait_until(lambda: state(alice, run)["status"] == "running", what="the run is running")
    response = alice.post(f"/api/agents/v2/{run}/cancel")
    assert response.status_code == 202 and response.json()["status"] in ("cancelling", "cancelled")
    events = sock.events_until_done({run})
    sock.close()
    assert events[-1]["type"] == "agent_cancelled"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(events) < 20 * 3 + 2
    assert state(alice, run)["status"] == "cancelled"
    # Twice is harmless; a finished run is a conflict; someone else's run is not found.
    assert alice.post(f"/api/agents/v2/{run}/cancel").status_code == 202
    done = alice.submit("t2", "echo", 1)["run_id"]
    alice.wait_for_state(done, {"completed"})
    conflict = alice.post(f"/api/agents/v2/{done}/cancel")
    assert conflict.status_code == 409 and conflict.json()["run_status"] == "completed"
    assert users.user("bob").post(f"/api/agents/v2/{run}/cancel").status_code == 404


def test_the_same_idempotency_key_returns_the_same_run(users):
    alice, bob = users.user("alice"), users.user("bob")
    body = {"agent": "echo", "input": "once", "idempotency_key": "order-42"}
    first = alice.post("/api/agents/v2/thread/t/runs", json=body)
    again = alice.post("/api/agents/v2/thread/t/runs", json=body)
    other = bob.post("/api/agents/v2/thread/t/runs", json=body)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["run_id"] == first.json()["run_id"]
    assert other.status_code == 202 and other.json()["run_id"] != first.json()["run_id"]
    listing = alice.get("/api/agents/v2/thread/t/runs").json()["items"]
    assert len(listing) == 1


def test_reject_strategy_answers_409_while_the_thread_is_busy(users):
    alice = users.user("alice")
    busy = alice.submit("t", "demo", {"steps": 2, "delay_ms": 300})["run_id"]
    rejected = alice.post("/api/agents/v2/thread/t/runs",
                          json={"agent": "echo", "multitask_strategy": "reject"})
    assert rejected.status_code == 409 and rejected.json()["active_runs"] == [busy]
    alice.wait_for_state(busy, {"completed"})
    accepted = alice.post("/api/agents/v2/thread/t/runs",
                          json={"agent": "echo", "multitask_strategy": "reject"})
    assert accepted.status_code == 202


def test_enqueue_strategy_starts_the_next_run_after_the_active_one(users):
    alice = users.user("alice")
    first = alice.submit("t", "demo", {"steps": 2, "delay_ms": 200})["run_id"]
    second = alice.submit("t", "echo", "next")["run_id"]
    a = alice.wait_for_state(first, {"completed"})
    b = alice.wait_for_state(second, {"completed"})
    assert b["started_at"] >= a["finished_at"]


def test_interrupt_strategy_cancels_the_active_run_then_starts(users):
    alice = users.user("alice")
    first = alice.submit("t", "demo", {"steps": 20, "delay_ms": 200})["run_id"]
    wait_until(lambda: state(alice, first)["status"] == "running", what="the first run is running")
    response = alice.post("/api/agents/v2/thread/t/runs",
                          json={"agent": "echo", "input": "now", "multitask_strategy": "interrupt"})
    assert response.status_code == 202
    second = response.json()["run_id"]
    assert alice.wait_for_state(second, {"completed"})["output"] == "now"
    assert state(alice, first)["status"] == "cancelled"


def test_too_many_waiting_runs_answer_429_with_retry_after(server_with, tokens, runlane_worker):
    alice = tokens.user("alice").on(server_with(max_queued_per_user=2))
    alice.submit("t", "demo", {"steps": 2, "delay_ms": 400})
    alice.submit("t", "echo", 1)
    alice.submit("t", "echo", 2)  # waiting: 2 (both behind the first in thread t)
    over = alice.post("/api/agents/v2/thread/t/runs", json={"agent": "echo"})
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
    assert over.headers["Content-Type"].startswith("application/problem+json")


def test_a_user_at_the_running_limit_does_not_delay_another_users_run(users):
    alice, bob = users.user("alice"), users.user("bob")
    alice_runs = [alice.submit(f"a{i}", "demo", {"steps": 1, "delay_ms": 1500})["run_id"]
                  for i in range(6)]
    wait_until(lambda: sum(state(alice, r)["status"] == "running" for r in alice_runs) == 4,
               what="four of alice's runs are running")
    bob_run = bob.submit("b", "echo", "fair")["run_id"]
    bob_state = bob.wait_for_state(bob_run, {"completed"})
    alice_states = [alice.wait_for_state(r, {"completed"}) for r in alice_runs]
    # Bob finished while Alice's first four were still running; her last two waited.
    assert bob_state["finished_at"] < min(s["finished_at"] for s in alice_states)
    assert max(s["attempt"] for s in alice_states) == 1
    started = sorted(s["started_at"] for s in alice_states)
    assert started[4] >= min(s["finished_at"] for s in alice_states)


@pytest.mark.parametrize("path", ["/api/agents/v2/{id}/state", "/api/agents/{id}/status"])
def test_unknown_run_is_404_never_a_made_up_pending(users, path):
    response = users.user().get(path.format(id="0123456789abcdef0123456789abcdef"))
    assert response.status_code == 404
    assert "run_id" not in response.json() and "pending" not in response.text

"""The run travels through Redis to a real worker; nothing executes in the web process."""
from __future__ import annotations

import threading

import tasks
from tests.support import assert_consecutive


def test_task_is_delivered_through_redis_to_a_worker_thread(users, redis_url):
    """Observed through Celery's own task_prerun signal: not eager, delivered by the broker."""
    from celery.signals import task_prerun

    seen: list[tuple[str, bool, dict, str]] = []

    def record(task_id, task, **_):  # type: ignore[no-untyped-def]
        seen.append((task_id, bool(task.request.is_eager), dict(task.request.delivery_info or {}),
                     threading.current_thread().name))

    task_prerun.connect(record, weak=False)
    try:
        alice = users.user("alice")
        run = alice.submit("t1", "echo", {"hello": "world"})
        state = alice.wait_for_state(run["run_id"], {"completed", "failed"})
    finally:
        task_prerun.disconnect(record)
    assert state["status"] == "completed"
    assert state["output"] == {"hello": "world"}
    mine = [s for s in seen if s[0] == f"{run['run_id']}-1"]  # task id: run id + dispatch token
    assert len(mine) == 1
    _, eager, delivery, thread_name = mine[0]
    assert not eager
    assert delivery.get("routing_key") == "runlane"
    assert thread_name != threading.current_thread().name
    assert tasks.app.conf.broker_url == redis_url
    assert tasks.app.conf.broker_url.startswith("redis://")


def test_demo_run_records_status_output_and_timestamps(users):
    alice = users.user("alice")
    sock = alice.socket()
    assert sock.recv_json()["type"] == "ready"
    run = alice.submit("t1", "demo", {"steps": 3})
    events = assert_consecutive(sock.events_until_done({run["run_id"]}), run["run_id"])
    sock.close()
    types = [e["type"] for e in events]
    assert types == (
        ["agent_started"]
        + ["agent_thinking", "tool_executing", "tool_completed"] * 3
        + ["agent_completed"]
    )
    state = alice.get(f"/api/agents/v2/{run['run_id']}/state").json()
    assert state["status"] == "completed"
    assert state["output"]["steps"] == 3
    assert state["last_seq"] == len(events)
    assert state["started_at"] and state["finished_at"]
    assert state["created_at"] <= state["started_at"] <= state["finished_at"]


def test_failing_agent_ends_failed_and_the_worker_carries_on(users):
    alice = users.user("alice")
    sock = alice.socket()
    sock.recv_json()
    bad = alice.submit("t1", "demo", {"steps": 3, "fail_at": 2})
    events = sock.events_until_done({bad["run_id"]})
    assert events[-1]["type"] == "agent_failed"
    assert "step 2" in events[-1]["data"]["error"]
    state = alice.get(f"/api/agents/v2/{bad['run_id']}/state").json()
    assert state["status"] == "failed" and "step 2" in state["error"]
    good = alice.submit("t1", "echo", "still alive")
    assert alice.wait_for_state(good["run_id"], {"completed"})["output"] == "still alive"
    sock.close()

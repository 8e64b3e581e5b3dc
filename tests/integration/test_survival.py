"""Runs survive real failures: killed workers, stuck agents, time limits, a broker outage.

Each test runs an isolated stack of real processes (prefork workers, gunicorn web, its own
Redis and database) so it can kill and restart parts of it.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.processes import Stack, kill_group
from tests.support import wait_until


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    s = Stack(tmp_path, {"RUNLANE_AGENT_TIME_LIMITS": json.dumps({"demo": [2, 3]})})
    try:
        yield s
    finally:
        s.close()


def started(log: str, run: str, *, attempt: int) -> bool:
    """The worker's own line for that attempt of the run (text format, with the run's ids)."""
    return any(f"run started: agent demo, attempt {attempt} " in line and f"run_id={run}" in line
               for line in log.splitlines())


def test_sigkilled_worker_run_is_finished_by_another_worker_as_attempt_2(stack, tokens):
    workers = {name: stack.worker(name) for name in ("w1", "w2")}
    alice = tokens.user("alice").on(stack.web())
    sock = alice.socket()
    sock.recv_json()
    run = alice.submit("t", "demo", {"steps": 6, "delay_ms": 250})["run_id"]
    first = [sock.recv_json() for _ in range(4)]
    holder = next(n for n in workers if started(stack.log(n), run, attempt=1))
    kill_group(workers[holder])  # the machine is gone: parent and pool child, no cleanup
    killed_at = time.monotonic()
    rest = sock.events_until_done({run}, timeout=60)
    sock.close()
    events = first + rest
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "agent_completed"
    assert [e["data"].get("attempt") for e in events if e["type"] == "agent_started"] == [1, 2]
    state = alice.get(f"/api/agents/v2/{run}/state").json()
    assert state["status"] == "completed" and state["attempt"] == 2
    other = next(n for n in workers if n != holder)
    assert started(stack.log(other), run, attempt=2)  # the survivor ran the second attempt
    # Its reaper found the run lost, and said so with the run's ids.
    lost = [line for line in stack.log(other).splitlines() if f"run {run} lost its worker" in line]
    assert lost and all(f"run_id={run} user_id={alice.user_id}]" in line for line in lost)
    print(f"run resumed {time.monotonic() - killed_at:.2f}s after the kill")


def test_soft_time_limit_ends_the_run_timed_out(stack, tokens):
    stack.worker("w1")
    alice = tokens.user("alice").on(stack.web())
    run = alice.submit("t", "demo", {"steps": 3, "delay_ms": 5000})["run_id"]
    state = alice.wait_for_state(run, {"timed_out", "completed", "failed"}, timeout=30)
    assert state["status"] == "timed_out"
    events = alice.get(f"/api/agents/v2/{run}/events").json()["items"]
    assert events[-1]["type"] == "agent_timed_out"


def test_hard_time_limit_kills_a_stuck_agent_and_the_run_ends_timed_out(stack, tokens):
    stack.worker("w1")
    alice = tokens.user("alice").on(stack.web())
    run = alice.submit("t", "demo", {"steps": 2, "delay_ms": 5000, "stubborn": True})["run_id"]
    state = alice.wait_for_state(run, {"timed_out", "completed", "failed"}, timeout=30)
    assert state["status"] == "timed_out" and "hard time limit" in state["error"]
    # The worker lives on (a new pool child) and runs the next run.
    after = alice.submit("t2", "echo", "alive")["run_id"]
    assert alice.wait_for_state(after, {"completed"}, timeout=30)["output"] == "alive"


def test_agent_ignoring_a_cancel_is_terminated_after_the_grace_period(stack, tokens):
    stack.worker("w1")
    alice = tokens.user("alice").on(stack.web())
    run = alice.submit("t", "demo", {"steps": 2, "delay_ms": 1900, "stubborn": True})["run_id"]
    # Cancel once step 1 is done (started, thinking, tool executing, tool completed: seq 4),
    # i.e. while the agent sleeps through its 1.9 s; a cancel landing before step 1's own
    # checks would be honoured there ("cancelled by its owner"), which is another test.
    wait_until(lambda: alice.get(f"/api/agents/v2/{run}/state").json()["last_seq"] >= 4, 20,
               "step 1 is done")
    assert alice.post(f"/api/agents/v2/{run}/cancel").status_code == 202
    state = alice.wait_for_state(run, {"cancelled", "completed", "timed_out"}, timeout=30)
    assert state["status"] == "cancelled" and "terminated" in state["error"]


def test_run_submitted_while_redis_is_down_completes_after_it_returns(stack, tokens):
    stack.worker("w1")
    alice = tokens.user("alice").on(stack.web())
    stack.redis.stop()
    response = alice.post("/api/agents/v2/thread/t/runs", json={"agent": "echo", "input": "late"})
    assert response.status_code == 202 and response.json()["status"] == "queued"
    stack.redis.start()
    state = alice.wait_for_state(response.json()["run_id"], {"completed"}, timeout=60)
    assert state["status"] == "completed" and state["output"] == "late"


def test_runs_are_routed_to_their_agents_queue(tmp_path, tokens):
    stack = Stack(tmp_path, {"RUNLANE_AGENT_QUEUES": json.dumps({"demo": "slow"})})
    try:
        stack.worker("default-only", queues="runlane")
        alice = tokens.user("alice").on(stack.web())
        echo = alice.submit("a", "echo", "default queue")["run_id"]
        demo = alice.submit("b", "demo", {"steps": 1})["run_id"]
        assert alice.wait_for_state(echo, {"completed"}, timeout=30)["status"] == "completed"
        # Kept: proving the default-only worker does NOT take the demo run means giving it
        # the time to (it took the echo run, submitted alongside, within milliseconds).
        time.sleep(1.5)
        assert alice.get(f"/api/agents/v2/{demo}/state").json()["status"] == "queued"
        stack.worker("slow-only", queues="slow")
        assert alice.wait_for_state(demo, {"completed"}, timeout=30)["status"] == "completed"
        assert started(stack.log("slow-only"), demo, attempt=1)
        assert f"run_id={demo}" not in stack.log("default-only")
    finally:
        stack.close()

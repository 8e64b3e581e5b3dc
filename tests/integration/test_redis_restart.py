"""A Redis restart (SIGKILL, back on the same port a few seconds later) while runs are in
flight: the worker keeps serving, and every run ends terminal.

Real parts only: the stack's own redis-server, killed with SIGKILL and started again on its
port, a prefork Celery worker subprocess and the gunicorn web.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.processes import Stack, kill_group
from tests.support import wait_until

TERMINAL = {"completed", "failed", "cancelled", "timed_out"}
LOST = "Connection to broker lost"  # what Celery's consumer logs when it notices


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.close()


def kill_redis(stack: Stack) -> None:
    """SIGKILL: no save, no goodbye to its clients; everything it held in memory is gone."""
    process = stack.redis.process
    assert process is not None
    process.kill()
    process.wait()
    stack.redis.process = None


def outage(stack: Stack, *workers: str) -> None:
    """Redis SIGKILLed, and back on its port once every worker noticed it was gone (so the
    workers really recover from a lost broker, not from a blip they never saw)."""
    kill_redis(stack)
    wait_until(lambda: all(LOST in stack.log(name) for name in workers), 30,
               f"{', '.join(workers)} noticed the lost broker connection")
    stack.redis.start()


def test_worker_serves_again_after_redis_restarts_mid_run(stack, tokens):
    worker = stack.worker("w1", concurrency=2)
    alice = tokens.user("alice").on(stack.web())
    run = alice.submit("t", "demo", {"steps": 10, "delay_ms": 700})["run_id"]
    wait_until(lambda: alice.get(f"/api/agents/v2/{run}/state").json()["last_seq"] >= 2,
               20, "the run is under way")
    outage(stack, "w1")
    back = time.monotonic()

    state = alice.wait_for_state(run, TERMINAL, timeout=40)
    assert state["status"] in TERMINAL, state
    after = alice.submit("t2", "echo", "still serving")["run_id"]
    assert alice.wait_for_state(after, {"completed"}, timeout=30)["output"] == "still serving"
    print(f"worker served a new run {time.monotonic() - back:.2f}s after Redis came back")
    assert worker.poll() is None, stack.log("w1")[-3000:]
    assert "Unrecoverable error" not in stack.log("w1")


def test_every_run_in_flight_ends_terminal_and_the_reaper_still_works_after_redis_restarts(
        stack, tokens):
    workers = {name: stack.worker(name, concurrency=1) for name in ("w1", "w2")}
    alice = tokens.user("alice").on(stack.web())
    # Two run, two wait in the queue: their messages die with Redis, the reaper re-sends them.
    runs = [alice.submit(f"t{n}", "demo", {"steps": 6, "delay_ms": 500})["run_id"]
            for n in range(4)]
    wait_until(lambda: sum(alice.get(f"/api/agents/v2/{r}/state").json()["status"] == "running"
                           for r in runs) == 2, 20, "two runs are under way")
    outage(stack, *workers)
    for run in runs:
        state = alice.wait_for_state(run, TERMINAL, timeout=60)
        assert state["status"] == "completed", state
    assert all(w.poll() is None for w in workers.values())

    # After the outage each worker's reaper still finds a run whose worker was lost.
    run = alice.submit("lost", "demo", {"steps": 6, "delay_ms": 400})["run_id"]
    holder = wait_until(lambda: next((n for n in workers if f"run_id={run}" in stack.log(n)),
                                     None), 20, "a worker took the run")
    kill_group(workers[holder])
    state = alice.wait_for_state(run, TERMINAL, timeout=60)
    assert state["status"] == "completed" and state["attempt"] == 2, state

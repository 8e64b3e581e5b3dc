"""SSE streams end with the run, even across a Redis outage, and end at once when the client
already has a finished run's last event."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import requests

from runlane.embedded import EmbeddedRedis
from tests.processes import free_port, worker_process
from tests.support import wait_until


def sse_events(response: requests.Response, deadline: float) -> Iterator[dict]:
    """The data of each SSE event (keep-alives skipped) until the stream ends or `deadline`."""
    for line in response.iter_lines(decode_unicode=True):
        if time.monotonic() > deadline:
            raise TimeoutError("the stream did not end in time")
        if line and line.startswith("data: "):
            yield json.loads(line[len("data: "):])


def logged_to_the_end(app, user_id: str, run_id: str, timeout: float = 20) -> bool:
    """Whether the run's terminal event reached the log (read straight from the database,
    since HTTP routes may need Redis)."""
    log = app.extensions["runlane"].events
    try:
        return wait_until(lambda: any(e.type == "agent_completed"
                                      for e in log.read_after(user_id, run_id, 0)),
                          timeout, f"run {run_id} logged its end")
    except AssertionError:
        return False


def test_sse_gets_the_terminal_event_after_a_redis_outage(server_with, tokens, tmp_path, app):
    port = free_port()
    own = EmbeddedRedis(tmp_path / "redis", port=port)
    own.start()
    env = dict(os.environ, REDIS_URL=own.url)
    try:
        with worker_process(env, tmp_path / "worker.log", concurrency=1):
            base = server_with(redis_url=own.url)
            alice = tokens.user("alice").on(base)
            run = alice.submit("t", "demo", {"steps": 3, "delay_ms": 700})["run_id"]
            got: list[dict] = []
            with requests.get(f"{base}/api/agents/v2/{run}/events", stream=True,
                              headers={**alice.headers, "Accept": "text/event-stream"},
                              timeout=(5, 30)) as response:
                for event in sse_events(response, time.monotonic() + 40):
                    got.append(event)
                    if event["seq"] == 4:
                        own.stop()  # the rest of the run is logged while publishes fail
                        assert logged_to_the_end(app, alice.user_id, run)
                        own.start()
            assert [e["seq"] for e in got] == list(range(1, 12))
            assert got[-1]["type"] == "agent_completed"
    finally:
        own.stop()


def test_sse_at_or_past_a_finished_runs_last_seq_ends_at_once(users):
    alice = users.user("alice")
    run = alice.submit("t", "echo", {"x": 1})["run_id"]
    state = alice.wait_for_state(run, {"completed"})
    last = state.get("last_seq") or len(alice.get(f"/api/agents/v2/{run}/events").json()["items"])
    url = f"{alice.base_url}/api/agents/v2/{run}/events"
    for headers, query in (({"Last-Event-ID": str(last)}, ""), ({}, f"?after={last + 50}")):
        started = time.monotonic()
        response = requests.get(url + query, headers={**alice.headers, **headers,
                                                      "Accept": "text/event-stream"},
                                timeout=(5, 5))
        assert response.status_code == 200
        assert "data:" not in response.text
        assert time.monotonic() - started < 3

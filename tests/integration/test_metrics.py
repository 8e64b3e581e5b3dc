"""/metrics after real runs: the in-process worker and server share this process's registry, so
one scrape shows both sides. Counters are cumulative across the session: compare before/after."""
from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Tokens
from tests.support import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str) -> Samples:
    response = requests.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_run_shows_in_every_run_event_and_factory_series(users: Tokens, live_server: str):
    alice = users.user("alice")
    socket = alice.socket()
    try:
        assert socket.recv_json()["type"] == "ready"
        before = scrape(live_server)
        run_id = alice.submit("t1", "demo", {"steps": 2, "delay_ms": 1})["run_id"]
        events = socket.events_until_done({run_id})
        # The worker records the run's duration just after it publishes the terminal event.
        def duration_recorded() -> Samples | None:
            after = scrape(live_server)  # the socket is still open
            return after if grew(before, after, "runlane_run_duration_seconds_count",
                                 agent="demo", status="completed") else None

        after = wait_until(duration_recorded, 10, "the worker recorded the run's duration")
    finally:
        socket.close()

    for status in ("queued", "running", "completed"):
        assert grew(before, after, "runlane_runs_total", status=status, agent="demo") >= 1, status
    assert grew(before, after, "runlane_run_queue_wait_seconds_count", agent="demo") >= 1
    assert grew(before, after, "runlane_run_duration_seconds_count",
                agent="demo", status="completed") >= 1
    for factory in ("agent", "bridge", "engine"):
        assert grew(before, after, "runlane_factory_build_seconds_count", factory=factory) >= 1
    for event_type in {e["type"] for e in events}:
        assert grew(before, after, "runlane_events_published_total", type=event_type) >= 1
        assert grew(before, after, "runlane_events_delivered_total", type=event_type) >= 1
    assert grew(before, after, "runlane_event_delivery_latency_seconds_count") >= len(events)
    assert value(after, "runlane_connected_sockets") >= 1
    assert value(after, "runlane_subscribed_users") >= 1
    # No label carries a user or a run.
    assert not [key for key in after if alice.user_id in str(key) or run_id in str(key)]


def settled(base_url: str, *names: str) -> Samples:
    """A scrape once `names` held still for 0.3 s: sockets of earlier tests on this shared
    server may still be closing (the server notices on its own schedule)."""
    scrapes: list[Samples] = []

    def held_still() -> Samples | None:  # asked every 0.3 s, the first time at once
        scrapes.append(scrape(base_url))
        if len(scrapes) < 2:
            return None
        last, now = scrapes[-2:]
        return now if all(value(now, name) == value(last, name) for name in names) else None

    return wait_until(held_still, 10, f"{', '.join(names)} hold still", interval=0.3)


def test_socket_gauges_follow_sockets_opening_and_closing(tokens: Tokens, live_server: str):
    bob = tokens.user("bob")
    idle = settled(live_server, "runlane_connected_sockets", "runlane_subscribed_users")
    sockets = [bob.socket() for _ in range(2)]
    for s in sockets:
        assert s.recv_json()["type"] == "ready"
    open_ = scrape(live_server)
    assert grew(idle, open_, "runlane_connected_sockets") == 2
    assert grew(idle, open_, "runlane_subscribed_users") == 1  # one user, two sockets
    for s in sockets:
        s.close()
    def back_to_idle() -> Samples | None:  # the server notices the close on its own schedule
        closed = scrape(live_server)
        return closed if value(closed, "runlane_connected_sockets") == value(
            idle, "runlane_connected_sockets") else None

    closed = wait_until(back_to_idle, 10, "the closed sockets are no longer counted")
    assert value(closed, "runlane_subscribed_users") == value(idle, "runlane_subscribed_users")


def test_v1_calls_and_rate_limit_rejections_are_counted(server_with):
    base = server_with(submit_rate_per_minute=1)
    carol = Tokens(base).user("carol")
    before = scrape(base)
    assert carol.get("/api/agents/unknown-run/status").status_code == 404
    carol.submit("t1", "echo", {"n": 1})
    refused = carol.post("/api/agents/v2/thread/t1/runs", json={"agent": "echo", "input": 2})
    assert refused.status_code == 429
    after = scrape(base)
    assert grew(before, after, "runlane_v1_calls_total", route="/api/agents/<run_id>/status") == 1
    assert grew(before, after, "runlane_rate_limited_total", kind="submit") == 1

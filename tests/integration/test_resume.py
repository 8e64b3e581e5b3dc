"""Nothing is lost: replay by run seq, by per-user cursor, over HTTP and SSE, and filters."""
from __future__ import annotations

import json
from datetime import timedelta

import requests

from tests.support import TERMINAL


def read_events(sock, n):  # type: ignore[no-untyped-def]
    events = []
    while len(events) < n:
        frame = sock.recv_json()
        assert frame is not None, sock.close_code
        if "seq" in frame:
            events.append(frame)
    return events


def test_reconnect_with_after_seq_gets_exactly_the_missed_events(users):
    alice = users.user("alice")
    first = alice.socket()
    first.recv_json()
    run = alice.submit("t", "demo", {"steps": 8, "delay_ms": 60})
    seen = read_events(first, 5)
    first.close()  # gone mid-run; events keep being published to nobody

    second = alice.socket()
    assert second.recv_json()["type"] == "ready"
    second.send_json({"type": "subscribe", "run_id": run["run_id"], "after_seq": seen[-1]["seq"]})
    frame = second.recv_json()
    while frame["type"] != "subscribed":  # live frames from before the subscription took effect
        frame = second.recv_json()
    assert frame == {"type": "subscribed", "run_id": run["run_id"]}
    rest = second.events_until_done({run["run_id"]})
    second.close()
    seqs = [e["seq"] for e in seen + rest]
    assert seqs == list(range(1, 8 * 3 + 3))  # 1..26, no gap, no duplicate


def test_after_subscribing_to_a_run_only_its_events_arrive(users):
    alice = users.user("alice")
    sock = alice.socket()
    sock.recv_json()
    a = alice.submit("t", "demo", {"steps": 6, "delay_ms": 50})["run_id"]
    b = alice.submit("t", "demo", {"steps": 6, "delay_ms": 50})["run_id"]
    sock.send_json({"type": "subscribe", "run_id": a})
    frame = sock.recv_json()
    while frame["type"] != "subscribed":  # live events queued before the command was read
        frame = sock.recv_json()
    after = sock.events_until_done({a})
    assert {e["run_id"] for e in after} == {a}
    alice.wait_for_state(b, {"completed"})
    sock.send_json({"type": "unsubscribe", "run_id": a})
    assert sock.recv_json() == {"type": "unsubscribed", "run_id": a}
    sock.close()


def test_thread_subscription_with_after_seq_replays_the_thread_only(users):
    alice = users.user("alice")
    one = alice.submit("alpha", "echo", 1)
    two = alice.submit("beta", "echo", 2)
    for run in (one, two):
        alice.wait_for_state(run["run_id"], {"completed"})
    sock = alice.socket()
    sock.recv_json()
    sock.send_json({"type": "subscribe", "thread_id": "alpha", "after_seq": 0})
    assert sock.recv_json()["type"] == "subscribed"
    events = sock.events_until_done({one["run_id"]})
    assert {e["thread_id"] for e in events} == {"alpha"}
    assert [e["seq"] for e in events] == [1, 2]
    sock.close()


def test_resume_by_cursor_replays_every_run_of_the_user(users):
    alice = users.user("alice")
    sock = alice.socket()
    start = sock.recv_json()["cursor"]
    runs = [alice.submit(f"t{i}", "echo", i)["run_id"] for i in range(3)]
    live = sock.events_until_done(set(runs))
    sock.close()
    again = alice.socket()
    again.recv_json()
    again.send_json({"type": "resume", "cursor": start})
    replayed = again.events_until_done(set(runs))
    again.close()
    key = lambda e: (e["run_id"], e["seq"])  # noqa: E731
    assert sorted(map(key, replayed)) == sorted(map(key, live))
    assert [e["cursor"] for e in replayed] == sorted(e["cursor"] for e in replayed)
    assert len(set(map(key, replayed))) == len(replayed)


def test_foreign_or_missing_targets_get_an_error_and_no_data(users):
    alice, bob = users.user("alice"), users.user("bob")
    run = alice.submit("private", "echo", "secret")
    alice.wait_for_state(run["run_id"], {"completed"})
    sock = bob.socket()
    sock.recv_json()
    for message in ({"type": "subscribe", "run_id": run["run_id"], "after_seq": 0},
                    {"type": "subscribe", "thread_id": "private", "after_seq": 0},
                    {"type": "subscribe", "run_id": "does-not-exist"}):
        sock.send_json(message)
        answer = sock.recv_json()
        assert answer["type"] == "error" and answer["code"] == "not_found"
    sock.send_json({"type": "resume", "cursor": 0})
    assert sock.recv_json()["type"] == "resumed"  # the resume replayed nothing of Alice's
    for bad in ({"type": "subscribe"}, {"type": "subscribe", "run_id": "x", "thread_id": "y"},
                {"type": "subscribe", "run_id": "../etc"}, {"type": "resume", "cursor": -1},
                {"type": "resume", "cursor": "1"}):
        sock.send_json(bad)
        assert sock.recv_json()["code"] == "bad_message"
    sock.close()


def test_replay_older_than_retention_says_resync_required(users, app):
    alice = users.user("alice")
    run = alice.submit("t", "echo", "old")
    alice.wait_for_state(run["run_id"], {"completed"})
    assert app.extensions["runlane"].events.purge(timedelta(0)) >= 2
    sock = alice.socket()
    sock.recv_json()
    sock.send_json({"type": "subscribe", "run_id": run["run_id"], "after_seq": 0})
    assert sock.recv_json()["type"] == "subscribed"
    assert sock.recv_json() == {"type": "resync_required", "run_id": run["run_id"]}
    sock.send_json({"type": "resume", "cursor": 0})
    assert sock.recv_json() == {"type": "resync_required"}
    assert sock.recv_json()["type"] == "resumed"
    sock.close()


def test_http_replay_pages_events_for_the_owner_only(users):
    alice, bob = users.user("alice"), users.user("bob")
    run = alice.submit("t", "demo", {"steps": 2})
    alice.wait_for_state(run["run_id"], {"completed"})
    path = f"/api/agents/v2/{run['run_id']}/events"
    page = alice.get(path, params={"after": 2, "limit": 3}).json()
    assert [e["seq"] for e in page["items"]] == [3, 4, 5] and page["next_after"] == 5
    rest = alice.get(path, params={"after": page["next_after"]}).json()
    assert [e["seq"] for e in rest["items"]] == [6, 7, 8]
    assert bob.get(path).status_code == 404


def test_sse_replays_after_last_event_id_then_streams_live_until_the_end(users):
    alice = users.user("alice")
    run = alice.submit("t", "demo", {"steps": 6, "delay_ms": 50})
    response = requests.get(
        f"{alice.base_url}/api/agents/v2/{run['run_id']}/events",
        headers={**alice.headers, "Accept": "text/event-stream", "Last-Event-ID": "3"},
        stream=True, timeout=30,
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    ids, events = [], []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("id:"):
            ids.append(int(line[3:]))
        elif line.startswith("data:"):
            events.append(json.loads(line[5:]))
    assert ids == [e["seq"] for e in events] == list(range(4, 6 * 3 + 3))
    assert events[-1]["type"] in TERMINAL

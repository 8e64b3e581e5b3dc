"""Lost publishes: a socket still gets every stored event of its owner, in order, within the
documented bound (docs/websocket.md), whether the publisher's connection was closed under it
or a publish vanished without anyone noticing."""
from __future__ import annotations

import json
import time

import websocket

from events.channels import user_channel
from events.transport import RedisPublisher
from tests.redis_kill import kill_publishers
from tests.support import assert_consecutive

TAIL_BOUND = 2.0  # seconds: the bound docs/websocket.md promises (events.router.TAIL_BOUND)


def test_a_publisher_connection_killed_mid_run_loses_no_event(users, redis_url):
    alice = users.user("alice")
    sock = alice.socket()
    assert sock.recv_json()["type"] == "ready"
    run = alice.submit("t", "demo", {"steps": 1, "delay_ms": 1500})["run_id"]
    seen = []
    while len(seen) < 4:  # the run now sleeps before its terminal event
        frame = sock.recv_json()
        if frame is not None and "seq" in frame:
            seen.append(frame)
    assert kill_publishers(redis_url) >= 1
    rest = sock.events_until_done({run}, timeout=10)
    mine = assert_consecutive(seen + rest, run)
    assert mine[-1]["type"] == "agent_completed" and mine[-1]["seq"] == 5
    sock.close()


def test_the_first_events_after_an_idle_connection_died_arrive(users, redis_url):
    alice = users.user("alice")
    warm = alice.submit("t", "echo", {"x": 1})["run_id"]  # the worker's publisher connects
    assert alice.wait_for_state(warm, {"completed"})["status"] == "completed"
    assert kill_publishers(redis_url) >= 1  # like a Redis restart while nothing ran
    sock = alice.socket()
    assert sock.recv_json()["type"] == "ready"
    run = alice.submit("t", "demo", {"steps": 3})["run_id"]
    events = sock.events_until_done({run}, timeout=10)
    assert [e["seq"] for e in assert_consecutive(events, run)] == list(range(1, 12))
    sock.close()


def test_an_event_logged_but_never_published_reaches_the_socket_within_the_bound(users, app):
    """The worst case: the log has an event no publish announced (e.g. the last event of a
    run whose PUBLISH was lost in flight). The router's tail check must find it."""
    st = app.extensions["runlane"]
    alice = users.user("alice")
    run = alice.submit("t", "echo", {"x": 1})["run_id"]
    assert alice.wait_for_state(run, {"completed"})["status"] == "completed"
    sock = alice.socket()
    ready = sock.recv_json()
    assert ready["type"] == "ready"
    silent = st.events.append(alice.user_id, run, "t", "agent_thinking", {"text": "late"})
    logged = time.monotonic()
    frame = sock.recv_json(timeout=TAIL_BOUND + 3)
    arrived = time.monotonic() - logged
    assert frame is not None and frame["cursor"] == silent.cursor and frame["seq"] == silent.seq
    assert arrived <= TAIL_BOUND + 0.5, arrived
    sock.close()


def test_a_lost_publish_hidden_behind_later_events_still_arrives(users, app):
    """Later cursors of another run do arrive: the gap below them is what was lost."""
    st = app.extensions["runlane"]
    alice = users.user("alice")
    first = alice.submit("t1", "echo", {"x": 1})["run_id"]
    assert alice.wait_for_state(first, {"completed"})["status"] == "completed"
    sock = alice.socket()
    assert sock.recv_json()["type"] == "ready"
    silent = st.events.append(alice.user_id, first, "t1", "agent_thinking", {"text": "late"})
    second = alice.submit("t2", "echo", {"x": 2})["run_id"]
    deadline = time.monotonic() + TAIL_BOUND + 5
    got: dict[int, dict] = {}
    while silent.cursor not in got or not any(
            e["run_id"] == second and e["type"] == "agent_completed" for e in got.values()):
        frame = sock.recv_json(timeout=max(0.1, deadline - time.monotonic()))
        assert frame is not None and time.monotonic() < deadline, sorted(got)
        if "cursor" in frame:
            assert frame["cursor"] not in got  # exactly once
            got[frame["cursor"]] = frame
    assert got[silent.cursor]["seq"] == silent.seq
    sock.close()


def test_a_runs_first_event_on_a_socket_is_preceded_by_its_unpublished_ones(users, app,
                                                                           redis_url):
    """The socket has sent nothing of the run yet when its first live event arrives with
    the publishes of the events before it lost: those must come first, from the log, and
    the tail check's later replay must not be what delivers (or drops) them."""
    st = app.extensions["runlane"]
    alice = users.user("alice")
    run = alice.submit("t", "echo", {"x": 1})["run_id"]
    assert alice.wait_for_state(run, {"completed"})["status"] == "completed"
    sock = alice.socket()
    assert sock.recv_json()["type"] == "ready"
    silent = [st.events.append(alice.user_id, run, "t", "agent_thinking", {"text": f"lost {n}"})
              for n in range(4)]
    live = st.events.append(alice.user_id, run, "t", "agent_thinking", {"text": "live"})
    publisher = RedisPublisher.from_url(redis_url)
    try:
        assert publisher.publish(user_channel(st.settings.channel_prefix, alice.user_id),
                                 live.encode())
        assert publisher.flush()
    finally:
        publisher.close()
    wanted = [e.seq for e in (*silent, live)]
    got: list[int] = []
    deadline = time.monotonic() + TAIL_BOUND + 3
    while len(got) < len(wanted) and time.monotonic() < deadline:
        try:
            frame = sock.recv_json(timeout=max(0.1, deadline - time.monotonic()))
        except websocket.WebSocketTimeoutException:
            break
        assert frame is not None
        if "seq" in frame:
            got.append(frame["seq"])
    assert got == wanted
    sock.close()


def test_a_run_the_socket_forgot_is_still_filled_from_the_log(users, app):
    """After the socket's memory of runs evicted a run, that run's next live event behind a
    lost publish is still preceded by it, and nothing already sent is sent again."""
    from webapp import socket_session

    class TwoRunSession(socket_session.SocketSession):
        __slots__ = ()
        remembered_runs = 2

    st = app.extensions["runlane"]
    alice = users.user("alice")
    runs = [alice.submit(f"t{n}", "echo", {"x": n})["run_id"] for n in range(3)]
    for run in runs:
        assert alice.wait_for_state(run, {"completed"})["status"] == "completed"
    session = TwoRunSession(user_id=alice.user_id, log=st.events, db=st.db)

    def live(run: str, text: str) -> list[int]:
        event = st.events.append(alice.user_id, run, "t", "agent_thinking", {"text": text})
        return [json.loads(f)["seq"] for f in session.on_live(event.to_dict(), event.encode())]

    first = live(runs[0], "sent")
    live(runs[1], "b")
    live(runs[2], "c")  # the socket no longer remembers runs[0]
    silent = st.events.append(alice.user_id, runs[0], "t", "agent_thinking", {"text": "lost"})
    assert live(runs[0], "after") == [silent.seq, silent.seq + 1]
    assert first == [silent.seq - 1]

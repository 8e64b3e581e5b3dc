"""Fuzzed socket frames: whatever a client sends, the server answers or refuses cleanly,
keeps the socket, keeps serving other users, and never crashes."""
from __future__ import annotations

import json

import requests
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (st.lists(children, max_size=5)
                      | st.dictionaries(st.text(max_size=10), children, max_size=5)),
    max_leaves=30,
)
MESSAGES = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "resume", "ping", "auth", "x"])},
    optional={"run_id": JSON, "thread_id": JSON, "after_seq": JSON, "cursor": JSON},
)
FRAMES = (
    JSON.map(json.dumps)
    | MESSAGES.map(json.dumps)
    | st.text(max_size=200)
    | st.binary(max_size=200)
    | st.integers(10, 2000).map(lambda n: "[" * n + "]" * n)
)


def test_fuzzed_frames_never_break_the_socket_or_the_server(users, live_server):
    alice, bob = users.user("alice"), users.user("bob")
    sock, other = alice.socket(), bob.socket()
    sock.recv_json(), other.recv_json()

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(frame=FRAMES)
    def send(frame):  # type: ignore[no-untyped-def]
        if isinstance(frame, bytes):
            sock.conn.send_binary(frame)
        else:
            sock.conn.send(frame)
        if not frame:  # wsproto delivers no event for an empty message: nothing to answer
            sock.send_json({"type": "ping"})
        answer = sock.recv_json(timeout=10)
        assert answer is not None, f"socket closed ({sock.close_code}) after {frame!r:.80}"
        assert answer["type"] in {"error", "pong", "subscribed", "unsubscribed", "resumed",
                                  "resync_required"} or "seq" in answer
        while sock.conn.sock and _pending(sock):  # replays may follow a valid resume
            try:
                sock.recv_json(timeout=1)
            except websocket.WebSocketTimeoutException:
                break  # what was pending was the server's ping (answered), not a frame

    send()
    sock.send_json({"type": "ping"})
    answer = sock.recv_json()
    while answer.get("type") != "pong":
        answer = sock.recv_json()
    run = bob.submit("t", "echo", "still served")["run_id"]
    assert other.events_until_done({run})[-1]["data"]["output"] == "still served"
    assert requests.get(f"{live_server}/healthz", timeout=5).status_code == 200
    sock.close(), other.close()


def _pending(sock) -> bool:  # type: ignore[no-untyped-def]
    import select

    return bool(select.select([sock.conn.sock], [], [], 0.05)[0])

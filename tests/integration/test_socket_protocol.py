"""The socket's own protocol: authentication, ready, ping, errors and limits."""
from __future__ import annotations

import json

import websocket

from tests.support import wait_until


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/api/agents/v2/ws"


def test_browser_style_first_message_auth_gets_ready(tokens):
    from tests.support import EventSocket

    alice = tokens.user("alice")
    sock = EventSocket(websocket.create_connection(ws_url(alice.base_url), timeout=10))
    sock.send_json({"type": "auth", "token": alice.token})
    ready = sock.recv_json()
    assert ready["type"] == "ready" and ready["user_id"] == alice.user_id
    assert ready["cursor"] == 0  # a new user has no events yet
    sock.close()


def test_socket_is_served_under_both_prefixes(tokens):
    from tests.support import EventSocket

    alice = tokens.user("alice")
    url = alice.base_url.replace("http://", "ws://") + "/api/agent/v2/ws"
    sock = EventSocket(websocket.create_connection(
        url, header=[f"Authorization: Bearer {alice.token}"], timeout=10))
    assert sock.recv_json()["type"] == "ready"
    sock.close()


def test_bad_token_in_first_message_closes_4401(live_server):
    from tests.support import EventSocket

    sock = EventSocket(websocket.create_connection(ws_url(live_server), timeout=10))
    sock.send_json({"type": "auth", "token": "not-a-token"})
    assert sock.recv_json() is None
    assert sock.close_code == 4401


def test_bad_token_in_header_closes_4401(live_server):
    from tests.support import EventSocket

    sock = EventSocket(websocket.create_connection(
        ws_url(live_server), header=["Authorization: Bearer nope"], timeout=10))
    assert sock.recv_json() is None
    assert sock.close_code == 4401


def test_silent_client_is_closed_4401_after_the_auth_timeout(server_with):
    from tests.support import EventSocket

    base = server_with(socket_auth_timeout=0.3)
    sock = EventSocket(websocket.create_connection(ws_url(base), timeout=10))
    assert sock.recv_json(timeout=5) is None
    assert sock.close_code == 4401


def test_ping_gets_pong_and_bad_frames_get_error_frames_without_closing(tokens):
    alice = tokens.user("alice")
    sock = alice.socket()
    sock.recv_json()
    sock.send_json({"type": "ping"})
    assert sock.recv_json() == {"type": "pong"}
    sock.conn.send("{not json")
    assert sock.recv_json()["type"] == "error"
    sock.send_json({"type": "teleport"})
    assert sock.recv_json()["code"] == "unknown_type"
    sock.send_json([1, 2])
    assert sock.recv_json()["type"] == "error"
    sock.send_json({"type": "ping"})
    assert sock.recv_json() == {"type": "pong"}
    sock.close()


def test_frame_over_the_size_limit_closes_1009(server_with, tokens):
    from tests.support import EventSocket

    base = server_with(socket_max_message_size=1024)
    alice = tokens.user("alice")
    sock = EventSocket(websocket.create_connection(
        ws_url(base), header=[f"Authorization: Bearer {alice.token}"], timeout=10))
    assert sock.recv_json()["type"] == "ready"
    sock.conn.send(json.dumps({"type": "ping", "pad": "x" * 5000}))
    assert sock.recv_json() is None
    assert sock.close_code == 1009


def test_channel_is_subscribed_while_a_socket_is_open_and_dropped_after(tokens, redis_url):
    import redis

    from events.channels import user_channel

    client = redis.Redis.from_url(redis_url)
    alice = tokens.user("alice")
    channel = user_channel("runlane", alice.user_id)

    def subscribers() -> int:
        return int(dict(client.pubsub_numsub(channel))[channel.encode()])

    assert subscribers() == 0
    first, second = alice.socket(), alice.socket()
    first.recv_json(), second.recv_json()
    assert subscribers() == 1  # one connection per process, whatever the socket count
    first.close(), second.close()
    wait_until(lambda: subscribers() == 0, 5, "the process unsubscribed")

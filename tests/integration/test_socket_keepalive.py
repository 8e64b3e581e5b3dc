"""Keep-alive and dead clients: protocol pings on the router's tick, and sockets whose client
stopped reading are disconnected rather than held forever."""
from __future__ import annotations

import socket

import redis
import websocket

from events.channels import user_channel
from tests.support import EventSocket, wait_until


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/api/agents/v2/ws"


def test_server_pings_and_a_client_that_answers_stays_connected(server_with, tokens):
    base = server_with(socket_ping_interval=0.3)
    alice = tokens.user("alice").on(base)
    conn = websocket.create_connection(
        ws_url(base), header=[f"Authorization: Bearer {alice.token}"], timeout=10)
    sock = EventSocket(conn)
    assert sock.recv_json()["type"] == "ready"
    pings = 0
    while pings < 4:  # websocket-client answers each ping with a pong
        opcode, _frame = conn.recv_data_frame(control_frame=True)
        assert opcode != websocket.ABNF.OPCODE_CLOSE
        pings += opcode == websocket.ABNF.OPCODE_PING
    sock.send_json({"type": "ping"})
    assert sock.recv_json() == {"type": "pong"}
    sock.close()


def test_a_client_that_never_answers_pings_is_closed_1008(server_with, tokens):
    base = server_with(socket_ping_interval=0.3)
    alice = tokens.user("alice").on(base)
    conn = websocket.create_connection(
        ws_url(base), header=[f"Authorization: Bearer {alice.token}"], timeout=10)
    opcodes = []
    while True:
        frame = conn.recv_frame()  # the raw frame: no automatic pong
        opcodes.append(frame.opcode)
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            break
    assert opcodes[0] == websocket.ABNF.OPCODE_TEXT  # ready
    assert websocket.ABNF.OPCODE_PING in opcodes
    assert int.from_bytes(frame.data[:2], "big") == 1008
    conn.close()


def test_a_client_that_stops_reading_is_disconnected_and_unsubscribed(
    server_with, tokens, runlane_worker, redis_url
):
    base = server_with(socket_queue_size=8, socket_send_buffer=16 * 1024,
                       socket_ping_interval=1.0)
    slow = tokens.user("slow").on(base)
    channel = user_channel("runlane", slow.user_id)
    client = redis.Redis.from_url(redis_url)

    def subscribers() -> int:
        return int(dict(client.pubsub_numsub(channel))[channel.encode()])

    stalled = EventSocket(websocket.create_connection(
        ws_url(base), header=[f"Authorization: Bearer {slow.token}"], timeout=30,
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)))
    assert stalled.recv_json()["type"] == "ready"
    assert subscribers() == 1
    # About 1 MB of events, never read: the server's send blocks, its queue overflows.
    for _ in range(8):
        slow.submit("t", "demo", {"steps": 20, "text": "x " * 4999})
    # The server lets go of the socket although nothing was read.
    wait_until(lambda: subscribers() == 0, 60, "the stalled socket is let go", interval=0.1)
    stalled.close()

"""The socket handler's failures and the numbers a client sends: an internal error closes the
socket with 1011 (logged once, never an HTTP response on the upgraded connection), every
number is range-checked against what the database holds, and the socket really has one
writer (pongs included) while events stream."""
from __future__ import annotations

import logging
import os
import re
import select
import socket
import sqlite3
import threading
import time
from pathlib import Path

import websocket

from tests.processes import web_process
from tests.support import EventSocket, assert_consecutive


def test_an_error_in_the_handler_closes_1011_and_is_logged_once(server_with, tokens, tmp_path,
                                                                caplog):
    from storage.db import migrate

    path = tmp_path / "own.db"
    migrate(f"sqlite:///{path}")
    base = server_with(database_url=f"sqlite:///{path}")
    alice = tokens.user("alice").on(base)
    sock = alice.socket()
    assert sock.recv_json()["type"] == "ready"
    with sqlite3.connect(path) as db:  # the database breaks under a connected socket
        db.execute("ALTER TABLE events RENAME TO events_gone")
    with caplog.at_level(logging.ERROR):
        sock.send_json({"type": "resume", "cursor": 0})
        assert sock.recv_json() is None  # a close frame, not a broken one
    assert sock.close_code == 1011
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    sock.close()


def test_numbers_out_of_the_databases_range_get_an_error_frame(users):
    alice = users.user("alice")
    run = alice.submit("t", "echo", {"x": 1})["run_id"]
    alice.wait_for_state(run, {"completed"})
    sock = alice.socket()
    assert sock.recv_json()["type"] == "ready"
    for message in ({"type": "subscribe", "run_id": run, "after_seq": 2**63},
                    {"type": "subscribe", "run_id": run, "after_seq": 2**31},
                    {"type": "subscribe", "thread_id": "t", "after_seq": 2**31},
                    {"type": "resume", "cursor": 2**64},
                    {"type": "resume", "cursor": 2**63},
                    {"type": "subscribe", "run_id": run, "after_seq": -1}):
        sock.send_json(message)
        answer = sock.recv_json()
        assert answer is not None and answer["type"] == "error", (message, answer)
        assert answer["code"] == "bad_message"
    sock.send_json({"type": "resume", "cursor": 2**63 - 1})
    assert sock.recv_json()["type"] == "resumed"
    sock.send_json({"type": "subscribe", "run_id": run, "after_seq": 2**31 - 1})
    assert sock.recv_json()["type"] == "subscribed"
    sock.send_json({"type": "ping"})
    assert sock.recv_json() == {"type": "pong"}
    sock.close()


def test_a_ping_flood_while_events_stream_never_corrupts_the_socket(users, tmp_path: Path):
    """Under gunicorn + gevent, with a small send buffer so frames go out in pieces: the
    client pings hundreds of times while runs stream; every frame must parse, every event
    arrive in order, and every ping get its pong."""
    env = dict(os.environ, RUNLANE_SOCKET_SEND_BUFFER="4096")
    with web_process(env, tmp_path / "web.log") as url:
        alice = users.user("alice").on(url)
        conn = websocket.create_connection(
            url.replace("http://", "ws://") + "/api/agents/v2/ws",
            header=[f"Authorization: Bearer {alice.token}"], timeout=20)
        sock = EventSocket(conn)
        assert sock.recv_json()["type"] == "ready"
        big = {"text": "x" * 30_000}
        runs = {alice.submit(f"t{n}", "demo", {"steps": 20})["run_id"] for n in range(3)}
        runs |= {alice.submit(f"e{n}", "echo", big)["run_id"] for n in range(6)}
        pings = 400
        stop = threading.Event()

        def flood() -> None:
            for n in range(pings):
                if stop.is_set():
                    return
                conn.ping(f"p{n}")

        flooder = threading.Thread(target=flood)
        flooder.start()
        events, pongs, pending = [], 0, set(runs)
        try:
            while pending or pongs < pings:
                opcode, data = conn.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_PONG:
                    pongs += 1
                elif opcode == websocket.ABNF.OPCODE_TEXT:
                    import json

                    frame = json.loads(data)
                    if "seq" in frame:
                        events.append(frame)
                        if frame["type"] in ("agent_completed", "agent_failed"):
                            pending.discard(frame["run_id"])
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise AssertionError(f"closed: {data!r}")
        finally:
            stop.set()
            flooder.join()
        for run in runs:
            assert_consecutive(events, run)
        assert pongs == pings
        conn.close()
        assert "ConcurrentObjectUseError" not in (tmp_path / "web.log").read_text()


def _raw_upgrade(url: str, token: str) -> socket.socket:
    """A websocket opened by hand on a real TCP socket with a tiny receive buffer; after the
    101 nothing is ever read from it."""
    host, port = url.removeprefix("http://").split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((host, int(port)))
    raw.sendall((f"GET /api/agents/v2/ws HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = raw.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return raw


def test_a_client_that_floods_pings_and_never_reads_is_cut_holding_little(tokens,
                                                                          tmp_path: Path):
    """The pongs it is owed cannot be sent (it reads nothing), so the server must stop
    taking its pings once it owes too many, and let go of it within a bounded time even
    though no event is streaming to it."""
    from webapp.socket_conn import MAX_OWED

    env = dict(os.environ, RUNLANE_SOCKET_SEND_BUFFER="4096", RUNLANE_SOCKET_PING_INTERVAL="1")
    log = tmp_path / "web.log"
    with web_process(env, log) as url:
        alice = tokens.user("alice")
        raw = _raw_upgrade(url, alice.token)
        raw.setblocking(False)
        ping = b"\x89\xfd\x00\x00\x00\x00" + b"p" * 125  # masked (with a zero key), 125 bytes
        burst = memoryview(ping * 64)
        sent, cut = 0, False
        started = time.monotonic()
        deadline = started + 30
        while time.monotonic() < deadline:
            _r, writable, _x = select.select([], [raw], [], 0.2)
            if not writable:
                continue
            try:
                sent += raw.send(burst[sent % len(burst):])
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
        elapsed = time.monotonic() - started
        raw.close()
        assert cut, f"still connected after {elapsed:.0f}s; {sent // len(ping)} pings taken"
        assert elapsed < 20, elapsed
        owed = [int(n) for n in re.findall(r"owed (\d+) replies", log.read_text())]
        assert owed and max(owed) <= MAX_OWED + 1, owed

"""The v2 event socket: authenticate, attach to the router, pump one user's events.

Each socket has exactly one writer (this view's loop): the router and the reader only
put frames into the socket's bounded SocketSink (or the websocket's input buffer, or the
replies it owes: webapp/socket_conn.py) and set one flag. An idle socket is two parked
greenlets (this view and the websocket's reader), kept as shallow and as small as a bare
flask-sock echo socket's (docs/benchmarks.md).
"""
from __future__ import annotations

import enum
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import greenlet

from flask import Blueprint, request
from simple_websocket import ConnectionClosed
from wsproto.events import Ping, TextMessage

from events.router import TICK
from events.sink import SocketSink
from runlane import logs
from runlane.errors import Unauthenticated
from runlane.tokens import Principal
from webapp.apidoc import documented
from webapp.auth import bearer_token
from webapp.extensions import WebState, sock, state
from webapp.ratelimit import over_limit
from webapp.socket_conn import (
    INTERNAL_ERROR,
    MAX_OWED,
    MAX_PENDING_FRAMES,
    OneWriterReader,
    close,
    reader_of,
)
from webapp.socket_replay import PAGE
from webapp.socket_session import SocketSession, frame

log = logging.getLogger(__name__)
bp = Blueprint("sockets", __name__)
T = TypeVar("T")


class CloseCode(enum.IntEnum):
    """Runlane's own close codes (4000-4999); documented in docs/websocket.md."""

    SLOW_CONSUMER = 4008  # send queue overflowed: reconnect and resume from the last seq
    TOO_MANY_CONNECTIONS = 4429  # over RUNLANE_SOCKET_CONNECTS_PER_MINUTE: back off
    UNAUTHENTICATED = 4401  # no valid token in the header or the first message within 5 s
    UNAVAILABLE = 4503  # the process could not subscribe to the event stream in time


BATCH = 64  # live items sent between two looks at the client's frames


def _on_fresh_stack(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` to completion on a short-lived greenlet and return its result.

    A greenlet keeps every page of Python frame stack it ever touched until it ends, so one
    deep call (JWT, SQL, Redis) made by a socket's long-lived greenlet would cost each idle
    socket a few KB for hours (docs/benchmarks.md). The child shares the caller's context
    (Flask's request, the log fields); its stack is freed when it returns. Works the same
    on a thread of the development server (greenlets are per thread).
    """
    child = greenlet.greenlet(fn)
    child.gr_context = greenlet.getcurrent().gr_context
    return child.switch(*args)  # type: ignore[no-any-return]


def _authenticate(ws: Any, st: WebState) -> Principal | None:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raw = ws.receive(timeout=st.settings.socket_auth_timeout)
        try:
            message = json.loads(raw) if raw is not None else None
        except (ValueError, TypeError, RecursionError):
            message = None
        if isinstance(message, dict) and message.get("type") == "auth":
            token = message.get("token") if isinstance(message.get("token"), str) else None
    if token is None:
        return None
    try:
        return st.tokens.verify(token)
    except Unauthenticated:
        return None


class _Inbox(SocketSink):
    """The socket's sink: woken through the websocket's own input flag (no second flag per
    socket), and able to cut a socket whose writer is stuck sending to a client that does
    not read."""

    __slots__ = ("reader",)

    def __init__(self, reader: OneWriterReader, maxsize: int, cursor: int) -> None:
        super().__init__(maxsize, wake=reader.server.event, cursor=cursor)
        self.reader = reader

    def blocked_since(self) -> float:
        return self.reader.writing_since

    def on_stall(self) -> None:
        # The writer is blocked in send() (a full TCP buffer), so it cannot send 4008 itself;
        # shutting the connection down fails that send and the writer leaves.
        try:
            self.reader.server.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _cut(ws: Any, code: int, reason: str) -> None:
    """Close a socket whose client is not reading: its TCP buffer may be full, so the close
    frame gets a short deadline and the connection is shut down either way."""
    try:
        ws.sock.settimeout(2.0)
        ws.close(code, reason)
    except (OSError, ConnectionClosed):
        pass
    try:
        ws.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@sock.route("/ws", bp=bp)  # registers a functools.wraps copy, so @documented goes below
@documented(
    summary="The event socket (websocket): authenticate, then receive your runs' events",
    description="Protocol, frames and close codes: docs/websocket.md. Authenticate with the "
                "Authorization header or a first frame {\"type\": \"auth\", \"token\": …}.",
    tags=("v2",), auth=False, errors=(400,), responses={101: None},
)
def events_socket(ws: Any) -> None:
    """Never raises: flask-sock would hand an exception to Flask, which writes an HTTP 500
    onto the upgraded connection. Any failure closes this socket with 1011, logged once."""
    reader = reader_of(ws)
    try:
        _serve(reader)
    except ConnectionClosed:
        pass
    except Exception:  # noqa: BLE001 - any bug: close this socket, keep the process
        log.exception("event socket failed; closing it with 1011")
        close(reader, INTERNAL_ERROR, "internal error")
    close(reader, 1000, None)
    reader.shut()


def _serve(reader: OneWriterReader) -> None:
    st = state()
    opened = _on_fresh_stack(_open, reader, st)
    if opened is None:
        return
    user_id, inbox, session = opened
    try:
        _pump(reader, inbox, session)
    except OSError as exc:  # the peer vanished, or the socket was cut while a send waited
        log.debug("event socket ended: %s", exc)
    finally:
        st.router.detach(user_id, inbox)


def _open(reader: OneWriterReader, st: WebState) -> tuple[str, _Inbox, SocketSession] | None:
    """Authenticate, subscribe and send `ready`; None when the socket was refused (closed)."""
    ws = reader.server
    principal = _authenticate(ws, st)
    if principal is None:
        ws.close(CloseCode.UNAUTHENTICATED, "authentication required")
        return None
    logs.bind(user_id=principal.user_id)  # reset with the request's log context
    if over_limit(st.redis, st.settings.channel_prefix, "socket", principal.user_id,
                  st.settings.socket_connects_per_minute) is not None:
        ws.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections; back off")
        return None
    if st.settings.socket_send_buffer:
        try:
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, st.settings.socket_send_buffer)
        except (OSError, AttributeError):
            log.debug("could not cap the socket send buffer")
    # The socket's floor, read before the sink is attached: the tail check starts from it
    # (older events are not missed), and whatever is logged after it reaches the socket,
    # live or from the log.
    floor = st.events.last_cursor(principal.user_id)
    inbox = _Inbox(reader, st.settings.socket_queue_size, floor)
    # Subscribed (and confirmed by Redis) before `ready`, so nothing published after the
    # client sees `ready` can be missed.
    if not st.router.attach(principal.user_id, inbox):
        st.router.detach(principal.user_id, inbox)
        ws.close(CloseCode.UNAVAILABLE, "event stream unavailable, retry")
        return None
    try:
        session = SocketSession(user_id=principal.user_id, log=st.events, db=st.db,
                                floor=floor)
        _send(reader, [frame({"type": "ready", "user_id": principal.user_id,
                              "cursor": session.max_cursor})])
    except BaseException:
        st.router.detach(principal.user_id, inbox)
        raise
    return principal.user_id, inbox, session


def _pump(reader: OneWriterReader, inbox: _Inbox, session: SocketSession) -> None:
    """The socket's single writer: wait on one flag, set by the websocket's reader (client
    frames, replies owed, close) and by the router (events, ticks, overflow); then answer
    everything, and send one page of a pending replay per round."""
    ws = reader.server
    while True:
        inbox.wake.clear()  # cleared before looking, so whatever arrives next wakes us
        if not reader.pay() or not ws.connected:
            return
        if inbox.overflowed:
            _cut(ws, CloseCode.SLOW_CONSUMER, "send queue overflow: resume from your last seq")
            return
        if (reader.overrun or len(ws.input_buffer) > MAX_PENDING_FRAMES
                or len(reader.owed) > MAX_OWED):
            _cut(ws, 1008, "too many frames")
            return
        busy = False
        while ws.input_buffer:
            busy = True
            _send(reader, _on_fresh_stack(session.on_command, ws.input_buffer.pop(0)))
        for _ in range(BATCH):
            item = inbox.pop()
            if item is None:
                break
            busy = True
            kind, payload, text = item
            if kind == "event":
                # The common case stays shallow; filling a gap reads the log (deep).
                _send(reader, _on_fresh_stack(session.on_live, payload, text)
                      if session.has_gap(payload) else session.on_live(payload, text))
            elif payload is TICK:
                if not _ping(reader):
                    return
            else:
                _send(reader, _on_fresh_stack(session.on_command, payload))
        if session.replaying:
            # A page fits in what the queue has left: the frames held while it is sent and
            # the live events waiting behind it count against one bound together.
            room = min(PAGE, inbox.maxsize - inbox.pending())
            _send(reader, _on_fresh_stack(session.replay_step, room))
            time.sleep(0)  # let other sockets run between pages (a greenlet under gevent)
            busy = True
        if not busy:
            inbox.wake.wait()


def _send(reader: OneWriterReader, frames: list[str]) -> None:
    """ws.send, but with sendall: simple-websocket's send() drops what a partial write left
    over, which corrupts the stream of a client that reads slowly. Replies the reader noted
    (pongs) go out between two frames, never inside one."""
    ws = reader.server
    for out in frames:
        if reader.owed:
            reader.pay()
        if not ws.connected:
            raise ConnectionClosed(ws.close_reason, ws.close_message)
        reader.write(ws.ws.send(TextMessage(data=out)))


def _ping(reader: OneWriterReader) -> bool:
    """Keep-alive on the router's tick: a protocol ping, after checking the previous one was
    answered; False (socket closed 1008) when it was not, as simple-websocket would."""
    ws = reader.server
    if not ws.pong_received:
        _cut(ws, 1008, "Ping/Pong timeout")
        return False
    ws.pong_received = False
    reader.write(ws.ws.send(Ping()))
    return True

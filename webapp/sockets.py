"""The v2 event socket: authenticate, attach to the router, pump one user's events.

Each socket has exactly one writer (this view's loop): the router and the reader only
put frames into the socket's bounded SocketSink (or note the client's messages and the
replies it is owed: webapp/socket_conn.py, the one place that knows simple-websocket's
insides) and set one flag. An idle socket is two parked greenlets (this view and the
websocket's reader), kept as shallow and as small as a bare flask-sock echo socket's
(docs/benchmarks.md).
"""
from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import greenlet
from flask import Blueprint, request

from domain.errors import Unauthenticated
from events.router import TICK
from events.sink import SocketSink
from runlane import logs
from runlane.tokens import Principal
from webapp.apidoc import documented
from webapp.auth import bearer_token
from webapp.extensions import WebState, sock, state
from webapp.ratelimit import over_limit
from webapp.socket_conn import INTERNAL_ERROR, ConnectionClosed, EventConnection, connection_of
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


def _authenticate(conn: EventConnection, st: WebState) -> Principal | None:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raw = conn.receive(timeout=st.settings.socket_auth_timeout)
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

    __slots__ = ("conn",)

    def __init__(self, conn: EventConnection, maxsize: int, cursor: int) -> None:
        super().__init__(maxsize, wake=conn.wake, cursor=cursor)
        self.conn = conn

    def blocked_since(self) -> float:
        return self.conn.writing_since

    def on_stall(self) -> None:
        # The writer is blocked in send() (a full TCP buffer), so it cannot send 4008 itself;
        # shutting the connection down fails that send and the writer leaves.
        self.conn.abort()


# flask-sock registers a functools.wraps copy of the view, so @documented goes below it.
@sock.route("/ws", bp=bp)  # type: ignore[untyped-decorator]
@documented(
    summary="The event socket (websocket): authenticate, then receive your runs' events",
    description="Protocol, frames and close codes: docs/websocket.md. Authenticate with the "
                "Authorization header or a first frame {\"type\": \"auth\", \"token\": …}.",
    tags=("v2",), auth=False, errors=(400,), responses={101: None},
)
def events_socket(ws: Any) -> None:
    """Never raises: flask-sock would hand an exception to Flask, which writes an HTTP 500
    onto the upgraded connection. Any failure closes this socket with 1011, logged once."""
    conn = connection_of(ws)
    try:
        _serve(conn)
    except ConnectionClosed:
        pass
    except Exception:  # any bug: close this socket, keep the process
        log.exception("event socket failed; closing it with 1011")
        conn.close(INTERNAL_ERROR, "internal error")
    conn.close(1000, None)
    conn.shut()


def _serve(conn: EventConnection) -> None:
    st = state()
    opened = _on_fresh_stack(_open, conn, st)
    if opened is None:
        return
    user_id, inbox, session = opened
    try:
        _pump(conn, inbox, session)
    except OSError as exc:  # the peer vanished, or the socket was cut while a send waited
        log.debug("event socket ended: %s", exc)
    finally:
        st.router.detach(user_id, inbox)


def _open(conn: EventConnection, st: WebState) -> tuple[str, _Inbox, SocketSession] | None:
    """Authenticate, subscribe and send `ready`; None when the socket was refused (closed)."""
    principal = _authenticate(conn, st)
    if principal is None:
        conn.close(CloseCode.UNAUTHENTICATED, "authentication required")
        return None
    logs.bind(user_id=principal.user_id)  # reset with the request's log context
    if over_limit(st.redis, st.settings.channel_prefix, "socket", principal.user_id,
                  st.settings.socket_connects_per_minute) is not None:
        conn.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections; back off")
        return None
    if st.settings.socket_send_buffer and not conn.cap_send_buffer(st.settings.socket_send_buffer):
        log.debug("could not cap the socket send buffer")
    # The socket's floor, read before the sink is attached: the tail check starts from it
    # (older events are not missed), and whatever is logged after it reaches the socket,
    # live or from the log.
    floor = st.events.last_cursor(principal.user_id)
    inbox = _Inbox(conn, st.settings.socket_queue_size, floor)
    # Subscribed (and confirmed by Redis) before `ready`, so nothing published after the
    # client sees `ready` can be missed.
    if not st.router.attach(principal.user_id, inbox):
        st.router.detach(principal.user_id, inbox)
        conn.close(CloseCode.UNAVAILABLE, "event stream unavailable, retry")
        return None
    try:
        session = SocketSession(user_id=principal.user_id, log=st.events, db=st.db,
                                floor=floor)
        _send(conn, [frame({"type": "ready", "user_id": principal.user_id,
                            "cursor": session.max_cursor})])
    except BaseException:
        st.router.detach(principal.user_id, inbox)
        raise
    return principal.user_id, inbox, session


def _pump(conn: EventConnection, inbox: _Inbox, session: SocketSession) -> None:
    """The socket's single writer: wait on one flag, set by the websocket's reader (client
    frames, replies owed, close) and by the router (events, ticks, overflow); then answer
    everything, and send one page of a pending replay per round."""
    while True:
        inbox.wake.clear()  # cleared before looking, so whatever arrives next wakes us
        if not conn.pay() or not conn.connected:
            return
        if inbox.overflowed:
            conn.cut(CloseCode.SLOW_CONSUMER, "send queue overflow: resume from your last seq")
            return
        if conn.overrun:
            conn.cut(1008, "too many frames")
            return
        busy = False
        while (message := conn.next_message()) is not None:
            busy = True
            _send(conn, _on_fresh_stack(session.on_command, message))
        for _ in range(BATCH):
            item = inbox.pop()
            if item is None:
                break
            busy = True
            kind, payload, text = item
            if kind == "event":
                # The common case stays shallow; filling a gap reads the log (deep).
                _send(conn, _on_fresh_stack(session.on_live, payload, text)
                      if session.has_gap(payload) else session.on_live(payload, text))
            elif payload is TICK:
                # Keep-alive: a protocol ping, once the previous one was answered (else the
                # socket is closed 1008, as simple-websocket's own pings would).
                if not conn.ping():
                    return
            else:
                _send(conn, _on_fresh_stack(session.on_command, payload))
        if session.replaying:
            # A page fits in what the queue has left: the frames held while it is sent and
            # the live events waiting behind it count against one bound together.
            room = min(PAGE, inbox.maxsize - inbox.pending())
            _send(conn, _on_fresh_stack(session.replay_step, room))
            time.sleep(0)  # let other sockets run between pages (a greenlet under gevent)
            busy = True
        if not busy:
            inbox.wake.wait()


def _send(conn: EventConnection, frames: list[str]) -> None:
    """Each frame whole (sendall: simple-websocket's send() drops what a partial write left
    over, which corrupts the stream of a client that reads slowly); replies the reader noted
    (pongs) go out between two frames, never inside one."""
    for out in frames:
        conn.send(out)

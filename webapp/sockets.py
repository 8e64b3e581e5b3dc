"""The v2 event socket: authenticate, attach to the router, pump one user's events.

Each socket has exactly one writer (this view's loop): the router and the reader only
put frames into the socket's bounded SocketSink.
"""
from __future__ import annotations

import enum
import json
import logging
import socket
import threading
from typing import Any

from flask import Blueprint, request
from simple_websocket import ConnectionClosed

from events.sink import SocketSink
from runlane import logs
from runlane.errors import Unauthenticated
from webapp.apidoc import documented
from webapp.auth import Principal, bearer_token
from webapp.extensions import WebState, sock, state
from webapp.ratelimit import over_limit
from webapp.socket_session import SocketSession, frame

log = logging.getLogger(__name__)
bp = Blueprint("sockets", __name__)


class CloseCode(enum.IntEnum):
    """Runlane's own close codes (4000-4999); documented in docs/websocket.md."""

    SLOW_CONSUMER = 4008  # send queue overflowed: reconnect and resume from the last seq
    TOO_MANY_CONNECTIONS = 4429  # over RUNLANE_SOCKET_CONNECTS_PER_MINUTE: back off
    UNAUTHENTICATED = 4401  # no valid token in the header or the first message within 5 s
    UNAVAILABLE = 4503  # the process could not subscribe to the event stream in time


_INPUT = {"type": "__input__"}  # the client sent frames (or left): read ws.input_buffer
MAX_PENDING_FRAMES = 64  # unanswered client frames before the socket is cut (1008)


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


class _InputSignal:
    """Replaces simple-websocket's input Event after authentication: its reader thread calls
    set() for each frame it buffers (and when the connection ends), which wakes this socket's
    single writer through the sink. No second reader per socket: it costs memory per socket."""

    def __init__(self, sink: SocketSink) -> None:
        self._sink = sink
        self._flag = threading.Event()

    def set(self) -> None:
        self._flag.set()
        self._sink.offer_control(_INPUT, wait=False)

    def clear(self) -> None:
        self._flag.clear()

    def is_set(self) -> bool:
        return self._flag.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._flag.wait(timeout)


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
    st = state()
    principal = _authenticate(ws, st)
    if principal is None:
        ws.close(CloseCode.UNAUTHENTICATED, "authentication required")
        return
    logs.bind(user_id=principal.user_id)  # reset with the request's log context
    if over_limit(st.redis, st.settings.channel_prefix, "socket", principal.user_id,
                  st.settings.socket_connects_per_minute) is not None:
        ws.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections; back off")
        return
    if st.settings.socket_send_buffer:
        try:
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, st.settings.socket_send_buffer)
        except (OSError, AttributeError):
            log.debug("could not cap the socket send buffer")
    sink = SocketSink(st.settings.socket_queue_size)
    try:
        # Subscribed (and confirmed by Redis) before `ready`, so nothing published after the
        # client sees `ready` can be missed.
        if not st.router.attach(principal.user_id, sink):
            ws.close(CloseCode.UNAVAILABLE, "event stream unavailable, retry")
            return
        session = SocketSession(user_id=principal.user_id, log=st.events, db=st.db)
        ws.send(frame({"type": "ready", "user_id": principal.user_id,
                        "cursor": session.max_cursor}))
        ws.event = _InputSignal(sink)
        sink.offer_control(_INPUT, wait=False)  # frames that arrived before the swap
        while ws.connected:
            if sink.overflowed:
                _cut(ws, CloseCode.SLOW_CONSUMER, "send queue overflow: resume from your last seq")
                return
            if len(ws.input_buffer) > MAX_PENDING_FRAMES:
                _cut(ws, 1008, "too many frames")
                return
            item = sink.next(timeout=1.0)
            if item is None:
                continue
            kind, payload, text = item
            if payload is _INPUT:
                frames = []
                while ws.input_buffer:
                    frames += session.on_command(ws.input_buffer.pop(0))
            elif kind == "event":
                frames = session.on_live(payload, text)
            else:
                frames = session.on_command(payload)
            for out in frames:
                ws.send(out)
    finally:
        st.router.detach(principal.user_id, sink)

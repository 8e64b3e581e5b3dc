"""The v2 event socket: authenticate, attach to the router, pump one user's events.

Each socket has exactly one writer (this view's loop): the router and the reader only
put frames into the socket's bounded SocketSink.
"""
from __future__ import annotations

import enum
import json
import logging
import threading
from typing import Any

from flask import Blueprint, request
from simple_websocket import ConnectionClosed

from events.router import SocketSink
from runlane.errors import Unauthenticated
from webapp.apidoc import documented
from webapp.auth import Principal, bearer_token, verify_token
from webapp.extensions import WebState, sock, state

log = logging.getLogger(__name__)
bp = Blueprint("sockets", __name__)


class CloseCode(enum.IntEnum):
    """Runlane's own close codes (4000-4999); documented in docs/websocket.md."""

    SLOW_CONSUMER = 4008  # send queue overflowed: reconnect and resume from the last seq
    UNAUTHENTICATED = 4401  # no valid token in the header or the first message within 5 s
    UNAVAILABLE = 4503  # the process could not subscribe to the event stream in time


def _frame(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


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
        return verify_token(st.settings, st.jwt_secret, token)
    except Unauthenticated:
        return None


def _answer(text: Any) -> dict[str, Any]:
    """The reply to one client frame; unknown or malformed frames get an error, not a close."""
    try:
        message = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        message = None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return {"type": "error", "code": "bad_message", "detail": "expected a JSON object with a type"}
    if message["type"] == "ping":
        return {"type": "pong"}
    return {"type": "error", "code": "unknown_type", "detail": f"unknown type {message['type']!r}"}


def _read(ws: Any, sink: SocketSink, gone: threading.Event) -> None:
    try:
        while True:
            text = ws.receive()
            if text is None:
                continue
            sink.offer(None, _frame(_answer(text)))
    except ConnectionClosed:
        pass
    except Exception:  # noqa: BLE001 - a reader failure ends this socket only
        log.exception("socket reader failed")
    finally:
        gone.set()


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
    sink = SocketSink(st.settings.socket_queue_size)
    sink.offer(None, _frame({"type": "ready", "user_id": principal.user_id}))
    try:
        if not st.router.attach(principal.user_id, sink):
            ws.close(CloseCode.UNAVAILABLE, "event stream unavailable, retry")
            return
        gone = threading.Event()
        threading.Thread(target=_read, args=(ws, sink, gone), daemon=True).start()
        while not gone.is_set():
            if sink.overflowed:
                ws.close(CloseCode.SLOW_CONSUMER, "send queue overflow: resume from your last seq")
                return
            item = sink.next(timeout=0.5)
            if item is not None:
                ws.send(item[1])
    finally:
        st.router.detach(principal.user_id, sink)

"""The websocket connection under the event socket: simple-websocket's server, with exactly
one writer, and a route that never answers an upgraded connection with HTTP.

simple-websocket's reader (a thread, or a greenlet under gevent) answers pings and close
frames itself, writing on the socket the view writes on: a pong could land inside a frame
the view was half-way through sending (clients then read a broken frame), and under gevent
two greenlets waiting to write on one socket raise ConcurrentObjectUseError. Here the reader
only reads: it notes the replies owed and sets the connection's flag, and the view's writer
sends them between two frames (`owed`). flask-sock's route lets an exception escape to
Flask, which writes an HTTP 500 onto the upgraded socket; `socket_route` closes it with 1011
and logs it once instead.
"""
from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, request
from simple_websocket import ConnectionClosed, Server
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

log = logging.getLogger(__name__)
INTERNAL_ERROR = 1011
# What the reader takes from a client before it stops reading it (the writer then closes it
# with 1008): complete frames not yet handled, and protocol replies (pongs) not yet sent.
# Enforced by the reader, which is never blocked, since the writer may be: a client that
# floods pings and reads nothing would otherwise make the reader hold its pongs unbounded.
MAX_PENDING_FRAMES = 64
MAX_OWED = 1024


class OneWriterServer(Server):
    """A simple-websocket server whose reader never writes after the handshake."""

    def __init__(self, environ: dict[str, Any], **options: Any) -> None:
        self.owed: list[Any] = []  # replies (Pong, CloseConnection) for the writer to send
        self.closing = False  # the peer's close frame arrived: reply, then end
        self.overrun = False  # the client sent past MAX_OWED / MAX_PENDING_FRAMES: not read on
        self.writing_since = 0.0  # monotonic start of the write in progress (0: none)
        self._handshaken = False
        super().__init__(environ, **options)

    def handshake(self) -> None:
        super().handshake()
        self._handshaken = True  # before the reader starts: from here on it only reads

    def _thread(self) -> None:
        """Read until the connection ends; only the writer closes the socket."""
        while self.connected:
            try:
                data = self.sock.recv(self.receive_bytes)
                if not data:
                    raise OSError("peer closed")
                self.ws.receive_data(data)
                self.connected = self._handle_events()
            except (OSError, LocalProtocolError):
                self.connected = False
                self.event.set()
                return
            if self.overrun:
                # Stop reading: TCP holds the client back from here on, and the writer
                # closes the socket with 1008 (or the router cuts it if the writer is stuck).
                log.warning("event socket client overran: owed %d replies, %d frames "
                            "unanswered; no longer reading it",
                            len(self.owed), len(self.input_buffer))
                self.event.set()
                return

    def _handle_events(self) -> bool:
        if not self._handshaken:  # the upgrade: simple-websocket writes the 101 itself
            return super()._handle_events()  # type: ignore[no-any-return]
        keep_going = True
        for event in self.ws.events():
            if isinstance(event, Ping):
                self.owed.append(event.response())
                if len(self.owed) > MAX_OWED:
                    self.overrun = True
                    break
            elif isinstance(event, Pong):
                self.pong_received = True
            elif isinstance(event, CloseConnection):
                self.close_reason, self.close_message = event.code, event.reason
                self.owed.append(event.response())
                self.closing = True
                keep_going = False
            elif isinstance(event, (TextMessage, BytesMessage)):
                if not self._collect(event):
                    self.owed.append(CloseConnection(1009, "Message is too big"))
                    self.closing = True
                    keep_going = False
                    break
                if len(self.input_buffer) > MAX_PENDING_FRAMES:
                    self.overrun = True
                    break
            elif isinstance(event, Request):  # a second upgrade request: a broken client
                keep_going = False
        self.event.set()
        return keep_going

    def _collect(self, event: TextMessage | BytesMessage) -> bool:
        """Add a message fragment to the input buffer; False when over the size limit."""
        self.incoming_message_len += len(event.data)
        if self.max_message_size and self.incoming_message_len > self.max_message_size:
            return False
        part = event.data.encode() if isinstance(event, TextMessage) else event.data
        if self.incoming_message is None:
            self.incoming_message = bytearray()
        self.incoming_message += part
        if event.message_finished:
            whole = bytes(self.incoming_message)
            self.input_buffer.append(whole.decode() if isinstance(event, TextMessage) else whole)
            self.incoming_message, self.incoming_message_len = None, 0
        return True

    def pay(self) -> bool:
        """Send the replies the reader noted (called by the writer only); False once the
        close handshake is done."""
        while self.owed:
            reply = self.owed.pop(0)
            try:
                self.write(self.ws.send(reply))
            except LocalProtocolError:  # a reply the connection's state no longer allows
                pass
            if isinstance(reply, CloseConnection):
                self.connected = False
        return not self.closing

    def write(self, data: bytes) -> None:
        """sendall, noting when it started: a write that does not finish for long (a client
        that reads nothing) is found by the router's ticker, which cuts the connection."""
        self.writing_since = time.monotonic()
        try:
            self.sock.sendall(data)
        finally:
            self.writing_since = 0.0

    def shut(self) -> None:
        """End the connection from the writer: shut down (the reader's recv returns and it
        leaves), then close the socket once the reader is gone."""
        self.connected = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(2.0)
        self.sock.close()


class _Upgraded(Response):
    """What the WSGI server gets back once the socket is done (as in flask-sock)."""

    def __init__(self, ws: OneWriterServer) -> None:
        super().__init__()
        self._ws = ws

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._ws.mode == "gunicorn":
            raise StopIteration()
        if self._ws.mode == "werkzeug":
            return super().__call__(*args, **kwargs)
        return []


def socket_route(bp: Blueprint, path: str) -> Callable[[Callable[..., None]], Callable[..., Any]]:
    """Register `view(ws)` as a websocket route on `bp` (flask-sock's `route`, with the
    one-writer server and errors turned into a 1011 close)."""

    def decorator(view: Callable[..., None]) -> Callable[..., Any]:
        @functools.wraps(view)
        def route(*args: Any, **kwargs: Any) -> Response:
            ws = OneWriterServer(request.environ,
                                 **current_app.config.get("SOCK_SERVER_OPTIONS", {}))
            try:
                view(ws, *args, **kwargs)
            except ConnectionClosed:
                pass
            except Exception:  # noqa: BLE001 - any bug: close this socket, keep the process
                log.exception("event socket failed; closing it with 1011")
                _close(ws, INTERNAL_ERROR, "internal error")
            _close(ws, 1000, None)
            ws.shut()
            return _Upgraded(ws)

        bp.route(path, websocket=True)(route)
        return route

    return decorator


def _close(ws: OneWriterServer, code: int, reason: str | None) -> None:
    try:
        ws.sock.settimeout(2.0)  # before anything is written: the client may not be reading
        ws.pay()
        if ws.connected:
            ws.close(code, reason)
    except (OSError, ConnectionClosed, LocalProtocolError):
        pass

"""The event socket's connection: flask-sock's simple-websocket server, with exactly one
writer.

simple-websocket's reader (a thread, or a greenlet under gevent) answers pings and close
frames itself, writing on the socket the view writes on: a pong could land inside a frame
the view was half-way through sending (clients then read a broken frame), and under gevent
two greenlets waiting to write on one socket raise ConcurrentObjectUseError. Its `send()` also
writes with `socket.send`, dropping whatever a partial write left over. Here the reader only
reads: it notes the replies owed and sets the connection's flag, and the view's writer sends
them between two frames (`EventConnection.pay`), always with `sendall`.

This module is the one place that reaches past flask-sock's and simple-websocket's documented
API; webapp/sockets.py holds an `EventConnection` and nothing of either library. What it
relies on (pinned by tests/contract/test_websocket_contract.py against the installed
versions):

- flask-sock builds each socket's `simple_websocket.Server` with the app's
  `SOCK_SERVER_OPTIONS` as keyword arguments, so `thread_class` reaches it (`install`);
- the server calls `thread_class(target=server._thread)` once the handshake is done (the 101
  sent), keeps the object as `server.thread` and starts it: the target's `__self__` is the
  server, and the loop run instead of `_thread` is `OneWriterReader.run`;
- after the handshake, `server.sock` is the connection's socket, `server.ws` its wsproto
  connection (open), `server.receive_bytes` the read size, `server.max_message_size` the
  option given, `server.event` an Event nobody but this module sets;
- `server.connected` is the library's "open" flag: flask-sock calls `server.close()` once the
  view returns, which does nothing but raise (swallowed) once the flag is False.

Everything else (whole messages, partial ones, pong bookkeeping, close frames) is kept here,
not in the library's `input_buffer`, `incoming_message`, `pong_received` or `close()`.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from flask import Flask
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

__all__ = ["ConnectionClosed", "EventConnection", "INTERNAL_ERROR", "MAX_OWED",
           "MAX_PENDING_FRAMES", "OneWriterReader", "connection_of", "install"]

log = logging.getLogger(__name__)
INTERNAL_ERROR = 1011
NO_STATUS = 1005  # a close frame without a code, as wsproto reports it
# What the reader takes from a client before it stops reading it (the writer then closes it
# with 1008): complete frames not yet handled, and protocol replies (pongs) not yet sent.
# Enforced by the reader, which is never blocked, since the writer may be: a client that
# floods pings and reads nothing would otherwise make the reader hold its pongs unbounded.
MAX_PENDING_FRAMES = 64
MAX_OWED = 1024
CLOSE_DEADLINE = 2.0  # seconds a close frame may take to leave: the client may not read


class OneWriterReader(threading.Thread):
    """simple-websocket's reader for one connection, made to only read.

    flask-sock builds each socket's simple-websocket `Server` from the app's
    `SOCK_SERVER_OPTIONS`, and that server's `thread_class` option chooses its reader: it is
    built once the handshake is done, with `target=server._thread`. Runlane gives this class
    there (`install`), keeps the server and runs the loop below on it instead; the view finds
    it as `ws.thread` (`connection_of`). The reader notes the replies owed; the writer sends
    them.
    """

    def __init__(self, target: Callable[[], None], **_: Any) -> None:
        super().__init__(daemon=True)
        self.server: Server = target.__self__  # type: ignore[attr-defined]
        self.messages: deque[str | bytes] = deque()  # whole client messages, not handled yet
        self.owed: list[Any] = []  # replies (Pong, CloseConnection) for the writer to send
        self.closing = False  # the peer's close frame arrived: reply, then end
        self.overrun = False  # the client sent past MAX_OWED / MAX_PENDING_FRAMES: not read on
        self.pong_received = True  # the last ping the writer sent was answered
        self.close_code: int = NO_STATUS  # the peer's close frame, once it came
        self.close_reason: str | None = None
        self._partial: bytearray | None = None  # a message whose last fragment is to come
        self._partial_len = 0

    def run(self) -> None:
        """Read until the connection ends; only the writer closes the socket."""
        ws = self.server
        while ws.connected:
            try:
                data = ws.sock.recv(ws.receive_bytes)
                if not data:
                    raise OSError("peer closed")
                ws.ws.receive_data(data)
                ws.connected = self._handle_events()
            except (OSError, LocalProtocolError):
                ws.connected = False
                ws.event.set()
                return
            if self.overrun:
                # Stop reading: TCP holds the client back from here on, and the writer
                # closes the socket with 1008 (or the router cuts it if the writer is stuck).
                log.warning("event socket client overran: owed %d replies, %d frames "
                            "unanswered; no longer reading it",
                            len(self.owed), len(self.messages))
                ws.event.set()
                return

    def _handle_events(self) -> bool:
        ws = self.server
        keep_going = True
        for event in ws.ws.events():
            if isinstance(event, Ping):
                self.owed.append(event.response())
                if len(self.owed) > MAX_OWED:
                    self.overrun = True
                    break
            elif isinstance(event, Pong):
                self.pong_received = True
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = event.code, event.reason
                self.owed.append(event.response())
                self.closing = True
                keep_going = False
            elif isinstance(event, (TextMessage, BytesMessage)):
                if not self._collect(event):
                    self.owed.append(CloseConnection(1009, "Message is too big"))
                    self.closing = True
                    keep_going = False
                    break
                if len(self.messages) > MAX_PENDING_FRAMES:
                    self.overrun = True
                    break
            elif isinstance(event, Request):  # a second upgrade request: a broken client
                keep_going = False
        ws.event.set()
        return keep_going

    def _collect(self, event: TextMessage | BytesMessage) -> bool:
        """Add a message fragment; False when the message is over the size limit."""
        limit = self.server.max_message_size
        self._partial_len += len(event.data)
        if limit and self._partial_len > limit:
            return False
        part = event.data.encode() if isinstance(event, TextMessage) else event.data
        if self._partial is None:
            self._partial = bytearray()
        self._partial += part
        if event.message_finished:
            whole = bytes(self._partial)
            self.messages.append(whole.decode() if isinstance(event, TextMessage) else whole)
            self._partial, self._partial_len = None, 0
        return True


class EventConnection:
    """The writer's side of one event socket: the only handle webapp/sockets.py holds.

    Every method but `abort` belongs to the socket's one writer (the view's greenlet).
    """

    __slots__ = ("_ws", "_reader", "writing_since")

    def __init__(self, ws: Server, reader: OneWriterReader) -> None:
        self._ws = ws
        self._reader = reader
        self.writing_since = 0.0  # monotonic start of the write in progress (0: none)

    # -- what the reader noted ---------------------------------------------------------------

    @property
    def wake(self) -> Any:
        """The flag the reader sets on every frame, reply owed or end (an Event); the socket's
        sink shares it, so one flag wakes the writer for both."""
        return self._ws.event

    @property
    def connected(self) -> bool:
        return bool(self._ws.connected)

    @property
    def overrun(self) -> bool:
        """The client sent more than it may have waiting (frames, or pongs it is owed)."""
        reader = self._reader
        return (reader.overrun or len(reader.messages) > MAX_PENDING_FRAMES
                or len(reader.owed) > MAX_OWED)

    def next_message(self) -> str | bytes | None:
        """The oldest whole client message not handled yet; None when there is none."""
        try:
            return self._reader.messages.popleft()
        except IndexError:
            return None

    def receive(self, timeout: float) -> str | bytes | None:
        """Wait up to `timeout` seconds for a whole client message; None when none came.

        Raises:
            ConnectionClosed: the connection ended first.
        """
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_message()
            if message is not None:
                return message
            if not self._ws.connected:
                raise ConnectionClosed(self._reader.close_code, self._reader.close_reason)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.wake.clear()  # cleared before looking again, so what arrives next wakes us
            if not self._reader.messages and self._ws.connected:
                self.wake.wait(left)

    # -- writing -----------------------------------------------------------------------------

    def pay(self) -> bool:
        """Send the replies the reader noted; False once the close handshake is done."""
        reader = self._reader
        while reader.owed:
            reply = reader.owed.pop(0)
            try:
                self._write(self._ws.ws.send(reply))
            except LocalProtocolError:  # a reply the connection's state no longer allows
                pass
            if isinstance(reply, CloseConnection):
                self._ws.connected = False
        return not reader.closing

    def send(self, text: str) -> None:
        """Send one text frame whole; replies owed go out first, never inside a frame.

        Raises:
            ConnectionClosed: the connection is closed.
            OSError: the peer vanished, or the socket was cut while the send waited.
        """
        if self._reader.owed:
            self.pay()
        if not self._ws.connected:
            raise ConnectionClosed(self._reader.close_code, self._reader.close_reason)
        self._write(self._ws.ws.send(TextMessage(data=text)))

    def ping(self) -> bool:
        """A protocol ping, after checking that the previous one was answered; False (and
        the socket closed 1008) when it was not."""
        if not self._reader.pong_received:
            self.cut(1008, "Ping/Pong timeout")
            return False
        self._reader.pong_received = False
        self._write(self._ws.ws.send(Ping()))
        return True

    def close(self, code: int, reason: str | None) -> None:
        """Send what is owed, then a close frame, with a deadline: the client may not read.
        Never raises; nothing is sent when the connection is closed already."""
        try:
            self._ws.sock.settimeout(CLOSE_DEADLINE)  # before anything is written
            self.pay()
            self._close_frame(code, reason)
        except (OSError, LocalProtocolError):
            pass

    def cut(self, code: int, reason: str) -> None:
        """Close a socket whose client is not reading: its TCP buffer may be full, so the
        close frame gets a short deadline and the connection is shut down either way."""
        try:
            self._ws.sock.settimeout(CLOSE_DEADLINE)
            self._close_frame(code, reason)
        except (OSError, LocalProtocolError):
            pass
        self.abort()

    def abort(self) -> None:
        """Shut the connection down now, from any thread: a send blocked on a client that
        does not read fails, and the reader's recv returns."""
        try:
            self._ws.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cap_send_buffer(self, size: int) -> bool:
        """Cap the kernel's send buffer of this socket (SO_SNDBUF); False when it cannot."""
        try:
            self._ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        except (OSError, AttributeError):
            return False
        return True

    def shut(self) -> None:
        """End the connection from the writer: shut down (the reader's recv returns and it
        leaves), then close the socket once the reader is gone."""
        self._ws.connected = False
        self.abort()
        if self._reader.is_alive():
            self._reader.join(2.0)
        self._ws.sock.close()

    def _close_frame(self, code: int, reason: str | None) -> None:
        if not self._ws.connected:
            return
        data = self._ws.ws.send(CloseConnection(code, reason))
        self._ws.connected = False
        self._write(data)

    def _write(self, data: bytes) -> None:
        """sendall, noting when it started: a write that does not finish for long (a client
        that reads nothing) is found by the router's ticker, which cuts the connection."""
        self.writing_since = time.monotonic()
        try:
            self._ws.sock.sendall(data)
        finally:
            self.writing_since = 0.0


def install(app: Flask) -> None:
    """Make flask-sock build every socket with the one-writer reader."""
    app.config.setdefault("SOCK_SERVER_OPTIONS", {})["thread_class"] = OneWriterReader


def connection_of(ws: Server) -> EventConnection:
    """The writer's handle on a socket flask-sock built (the `ws` its route hands the view).

    Raises:
        RuntimeError: the app's SOCK_SERVER_OPTIONS lost the reader (`install` not called).
    """
    reader = getattr(ws, "thread", None)
    if not isinstance(reader, OneWriterReader) or reader.server is not ws:
        raise RuntimeError("the event socket needs webapp.socket_conn.install(app)")
    return EventConnection(ws, reader)

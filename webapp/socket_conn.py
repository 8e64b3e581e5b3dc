"""The event socket's connection: flask-sock's simple-websocket server, with exactly one
writer.

simple-websocket's reader (a thread, or a greenlet under gevent) answers pings and close
frames itself, writing on the socket the view writes on: a pong could land inside a frame
the view was half-way through sending (clients then read a broken frame), and under gevent
two greenlets waiting to write on one socket raise ConcurrentObjectUseError. Here the reader
only reads: it notes the replies owed and sets the connection's flag, and the view's writer
sends them between two frames (`owed`). This module is the one place that reaches into
simple-websocket's server (its socket, wsproto connection, buffers and flag).
"""
from __future__ import annotations

import logging
import socket
import threading
import time
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

log = logging.getLogger(__name__)
INTERNAL_ERROR = 1011
# What the reader takes from a client before it stops reading it (the writer then closes it
# with 1008): complete frames not yet handled, and protocol replies (pongs) not yet sent.
# Enforced by the reader, which is never blocked, since the writer may be: a client that
# floods pings and reads nothing would otherwise make the reader hold its pongs unbounded.
MAX_PENDING_FRAMES = 64
MAX_OWED = 1024


class OneWriterReader(threading.Thread):
    """simple-websocket's reader for one connection, made to only read.

    flask-sock builds each socket's simple-websocket `Server` from the app's
    `SOCK_SERVER_OPTIONS`, and that server's `thread_class` option chooses its reader: it is
    built once the handshake is done, with `target=server._thread`. Runlane gives this class
    there (`install`), keeps the server and runs the loop below on it instead; the view finds
    it as `ws.thread` (`reader_of`). The reader notes the replies owed; the writer sends them.
    """

    def __init__(self, target: Callable[[], None], **_: Any) -> None:
        super().__init__(daemon=True)
        self.server: Server = target.__self__  # type: ignore[attr-defined]
        self.owed: list[Any] = []  # replies (Pong, CloseConnection) for the writer to send
        self.closing = False  # the peer's close frame arrived: reply, then end
        self.overrun = False  # the client sent past MAX_OWED / MAX_PENDING_FRAMES: not read on
        self.writing_since = 0.0  # monotonic start of the write in progress (0: none)

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
                            len(self.owed), len(ws.input_buffer))
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
                ws.pong_received = True
            elif isinstance(event, CloseConnection):
                ws.close_reason, ws.close_message = event.code, event.reason
                self.owed.append(event.response())
                self.closing = True
                keep_going = False
            elif isinstance(event, (TextMessage, BytesMessage)):
                if not self._collect(event):
                    self.owed.append(CloseConnection(1009, "Message is too big"))
                    self.closing = True
                    keep_going = False
                    break
                if len(ws.input_buffer) > MAX_PENDING_FRAMES:
                    self.overrun = True
                    break
            elif isinstance(event, Request):  # a second upgrade request: a broken client
                keep_going = False
        ws.event.set()
        return keep_going

    def _collect(self, event: TextMessage | BytesMessage) -> bool:
        """Add a message fragment to the input buffer; False when over the size limit."""
        ws = self.server
        ws.incoming_message_len += len(event.data)
        if ws.max_message_size and ws.incoming_message_len > ws.max_message_size:
            return False
        part = event.data.encode() if isinstance(event, TextMessage) else event.data
        if ws.incoming_message is None:
            ws.incoming_message = bytearray()
        ws.incoming_message += part
        if event.message_finished:
            whole = bytes(ws.incoming_message)
            ws.input_buffer.append(whole.decode() if isinstance(event, TextMessage) else whole)
            ws.incoming_message, ws.incoming_message_len = None, 0
        return True

    def pay(self) -> bool:
        """Send the replies the reader noted (called by the writer only); False once the
        close handshake is done."""
        while self.owed:
            reply = self.owed.pop(0)
            try:
                self.write(self.server.ws.send(reply))
            except LocalProtocolError:  # a reply the connection's state no longer allows
                pass
            if isinstance(reply, CloseConnection):
                self.server.connected = False
        return not self.closing

    def write(self, data: bytes) -> None:
        """sendall, noting when it started: a write that does not finish for long (a client
        that reads nothing) is found by the router's ticker, which cuts the connection."""
        self.writing_since = time.monotonic()
        try:
            self.server.sock.sendall(data)
        finally:
            self.writing_since = 0.0

    def shut(self) -> None:
        """End the connection from the writer: shut down (the reader's recv returns and it
        leaves), then close the socket once the reader is gone."""
        self.server.connected = False
        try:
            self.server.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.is_alive():
            self.join(2.0)
        self.server.sock.close()


def install(app: Flask) -> None:
    """Make flask-sock build every socket with the one-writer reader."""
    app.config.setdefault("SOCK_SERVER_OPTIONS", {})["thread_class"] = OneWriterReader


def reader_of(ws: Server) -> OneWriterReader:
    """The one-writer reader of a socket flask-sock built.

    Raises:
        RuntimeError: the app's SOCK_SERVER_OPTIONS lost the reader (`install` not called).
    """
    reader = ws.thread
    if not isinstance(reader, OneWriterReader):
        raise RuntimeError("the event socket needs webapp.socket_conn.install(app)")
    return reader


def close(reader: OneWriterReader, code: int, reason: str | None) -> None:
    """Send what is owed, then a close frame, with a deadline: the client may not read."""
    ws = reader.server
    try:
        ws.sock.settimeout(2.0)  # before anything is written: the client may not be reading
        reader.pay()
        if ws.connected:
            ws.close(code, reason)
    except (OSError, ConnectionClosed, LocalProtocolError):
        pass

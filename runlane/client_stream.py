"""EventStream: one run's events over the socket, each once and in order, across reconnects.

The socket protocol (docs/websocket.md) makes this small: after `subscribe` with `after_seq`
the server sends exactly the run's events with `seq > after_seq` (stored, then live), so a
client that remembers the last seq it handed out can drop the connection at any moment and
carry on from there on a new one.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Generator, Iterator
from typing import Any, Protocol

import websocket

from runlane.client_models import (
    Event,
    Run,
    RunlaneAPIError,
    RunlaneConnectionError,
    connection_reason,
)

log = logging.getLogger(__name__)

# Close codes after which reconnecting cannot help (docs/websocket.md).
_FATAL_CLOSES = {4401: (401, "Unauthorized", "the server did not accept the token on the socket"),
                 1009: (400, "Bad request", "a frame was too large for the server")}
_RATE_LIMITED = 4429


class StreamSource(Protocol):
    """What a stream needs of the client that opened it: where the socket is, the token to
    show it, and the run's state over HTTP. Declared here, not imported from
    `runlane.client`, because the client imports this module to hand out streams."""

    token: str | None

    @property
    def socket_url(self) -> str: ...

    def state(self, run_id: str) -> Run: ...


class _Dropped(Exception):
    """The connection ended or went silent; reconnect and resubscribe."""


class EventStream(Iterator[Event]):
    """Iterate a run's events with `seq > after` until its terminal event, live.

    When the socket drops (network, server restart, a 4008 slow-consumer cut) it reconnects
    with doubling backoff and subscribes again from `last_seq`, the seq of the last event it
    yielded, so nothing is skipped or repeated. After `retries` failed connection attempts in
    a row it raises RunlaneConnectionError. `reconnects` counts reconnection attempts.
    `resync_required` is set when the server no longer holds some requested events (older
    than its retention): those are skipped; reload the run's state over HTTP.

    Raises (from iteration):
        RunlaneAPIError: 404 when the run is not yours, 401 when the token is refused.
        RunlaneConnectionError: the server stayed unreachable.
    """

    def __init__(self, client: StreamSource, run_id: str, *, after: int = 0,
                 retries: int = 10, idle_timeout: float = 30.0, backoff: float = 0.2,
                 max_backoff: float = 5.0) -> None:
        self.run_id = run_id
        self.last_seq = after
        self.reconnects = 0
        self.resync_required = False
        self.connection: websocket.WebSocket | None = None  # the current socket, if any
        self._client = client
        self._retries = retries
        self._idle = idle_timeout
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._events = self._generate()

    def __next__(self) -> Event:
        return next(self._events)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop iterating and close the socket (also done when the terminal event is read)."""
        self._events.close()
        self._disconnect()

    # -- the loop ---------------------------------------------------------------------------

    def _generate(self) -> Generator[Event, None, None]:
        if self._already_over():
            return
        failures = 0
        try:
            while True:
                try:
                    self._connect()
                    failures = 0
                    for event in self._read():
                        self.last_seq = event.seq
                        yield event
                        if event.terminal:
                            return
                    raise _Dropped("the server closed the socket")
                except _Dropped as exc:
                    self._disconnect()
                    failures += 1
                    if failures > self._retries:
                        raise RunlaneConnectionError(
                            f"{self._client.socket_url}: {exc} "
                            f"(gave up after {self._retries} reconnect attempts)") from None
                    delay = min(self._max_backoff, self._backoff * 2 ** (failures - 1))
                    log.info("event socket of run %s: %s; reconnecting in %.1fs after seq %d",
                             self.run_id, exc, delay, self.last_seq)
                    time.sleep(delay * (0.8 + 0.4 * random.random()))
                    self.reconnects += 1
        finally:
            self._disconnect()

    def _already_over(self) -> bool:
        """Read the run over HTTP first: a missing run or an unreachable server fails at once
        (not after every reconnect attempt), and a stream asked to start at or past a finished
        run's last event ends instead of waiting for events that will never come."""
        run = self._client.state(self.run_id)
        return run.finished and run.last_seq <= self.last_seq

    def _connect(self) -> None:
        """Open a socket, wait for `ready`, subscribe from `last_seq`, wait for `subscribed`."""
        header = [f"Authorization: Bearer {self._client.token}"] if self._client.token else []
        try:
            self.connection = websocket.create_connection(
                self._client.socket_url, header=header, timeout=self._idle)
        except websocket.WebSocketBadStatusException as exc:
            if exc.status_code in (401, 403, 404):
                raise RunlaneAPIError(exc.status_code, "Socket refused",
                                      f"the upgrade was answered {exc.status_code}") from None
            raise _Dropped(f"upgrade answered {exc.status_code}") from None
        except (websocket.WebSocketException, OSError) as exc:
            raise _Dropped(connection_reason(exc)) from None
        self._expect("ready")
        self._send({"type": "subscribe", "run_id": self.run_id, "after_seq": self.last_seq})
        # Frames of this run sent before `subscribed` are superseded by the replay after it.
        self._expect("subscribed")

    def _expect(self, kind: str) -> None:
        while True:
            frame = self._recv()
            if frame.get("type") == kind:
                return

    def _read(self) -> Iterator[Event]:
        while True:
            frame = self._recv()
            if frame.get("type") == "resync_required":
                self.resync_required = True
                log.warning("run %s: some events are past the server's retention", self.run_id)
                continue
            if "seq" not in frame or frame.get("run_id") != self.run_id:
                continue  # pong, acknowledgements
            event = Event.from_json(frame)
            if event.seq > self.last_seq:  # the server never repeats one; be safe anyway
                yield event

    def _recv(self) -> dict[str, Any]:
        """The next JSON frame; a silent socket is pinged once before it counts as dropped."""
        conn = self.connection
        assert conn is not None
        pinged = False
        while True:
            try:
                opcode, data = conn.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                if pinged:
                    raise _Dropped(f"no frame for {2 * self._idle:g}s") from None
                pinged = True
                self._send({"type": "ping"})
                continue
            except (websocket.WebSocketException, OSError) as exc:
                raise _Dropped(connection_reason(exc) or "connection lost") from None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self._closed(data)
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue  # pings are answered by websocket-client itself
            pinged = False
            frame = json.loads(data)
            if frame.get("type") == "error":
                if frame.get("code") == "not_found":
                    raise RunlaneAPIError(404, "Not found", str(frame.get("detail", "")))
                raise RunlaneAPIError(400, "Bad request", str(frame.get("detail", "")))
            return frame  # type: ignore[no-any-return]

    def _closed(self, data: bytes) -> None:
        code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
        if code in _FATAL_CLOSES:
            status, title, detail = _FATAL_CLOSES[code]
            raise RunlaneAPIError(status, title, f"{detail} (close {code})")
        if code == _RATE_LIMITED:
            log.warning("too many socket connections for this user; backing off")
            time.sleep(self._max_backoff)
        reason = data[2:].decode("utf-8", "replace")
        raise _Dropped(f"closed by the server ({code}{': ' + reason if reason else ''})")

    def _send(self, message: dict[str, Any]) -> None:
        assert self.connection is not None
        try:
            self.connection.send(json.dumps(message))
        except (websocket.WebSocketException, OSError) as exc:
            raise _Dropped(connection_reason(exc) or "connection lost") from None

    def _disconnect(self) -> None:
        conn, self.connection = self.connection, None
        if conn is not None:
            try:
                conn.close(timeout=1)
            except (websocket.WebSocketException, OSError):
                pass

"""What tests share: waiting on a condition, finding PostgreSQL, and the clients for the real
server (HTTP with a token, and a socket that reads JSON frames)."""
from __future__ import annotations

import functools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
import websocket

TERMINAL = {"agent_completed", "agent_failed", "agent_cancelled", "agent_timed_out"}

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 20, what: str = "the condition",
               interval: float = 0.05) -> T:
    """The first truthy answer of `predicate()`, asked every `interval` seconds.

    The one place tests wait: for something to happen, never for a fixed time. `predicate`
    may raise (an assertion that a process is still alive, say) to stop waiting at once.

    Raises:
        AssertionError: `predicate` gave no truthy answer within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if value := predicate():
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(interval)


# PostgreSQL: RUNLANE_TEST_DATABASE_URL when it names one (it then also runs the whole suite),
# else RUNLANE_TEST_PG_URL, else the server this project's machines run.
MACHINE_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@functools.cache
def find_postgres() -> str | None:
    """The PostgreSQL server tests may use, or None when it does not answer (or psycopg is not
    installed); asked once per process."""
    url = os.environ.get("RUNLANE_TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        url = os.environ.get("RUNLANE_TEST_PG_URL") or MACHINE_POSTGRES
    try:
        import psycopg

        psycopg.connect(_libpq(url), connect_timeout=2).close()
    except Exception:  # noqa: BLE001 - no driver, no server, or no such database
        return None
    return url


def _libpq(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://…) as libpq spells it."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


@contextmanager
def postgres_database(prefix: str = "runlane_test") -> Iterator[str | None]:
    """A fresh, empty database on `find_postgres()`'s server, dropped afterwards; None when
    there is no PostgreSQL."""
    server = find_postgres()
    if server is None:
        yield None
        return
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(server), autocommit=True, connect_timeout=2) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class User:
    user_id: str
    token: str
    base_url: str

    def on(self, base_url: str) -> User:
        """The same user talking to another server."""
        return User(self.user_id, self.token, base_url)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.base_url + path, headers=self.headers, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.base_url + path, headers=self.headers, timeout=10, **kwargs)

    def submit(self, thread: str, agent: str, input: Any,
               prefix: str = "/api/agents") -> dict[str, Any]:
        response = self.post(f"{prefix}/v2/thread/{thread}/runs",
                             json={"agent": agent, "input": input})
        assert response.status_code == 202, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_for_state(self, run_id: str, statuses: set[str],
                       timeout: float = 20) -> dict[str, Any]:
        """The run's state once its status is one of `statuses`, else its last state after
        `timeout` seconds (for the caller's assertion to show)."""
        last: dict[str, Any] = {}

        def reached() -> bool:
            last.update(self.get(f"/api/agents/v2/{run_id}/state").json())
            return last["status"] in statuses

        try:
            wait_until(reached, timeout, f"run {run_id} in {sorted(statuses)}")
        except AssertionError:
            pass
        return last

    def socket(self, *, header_auth: bool = True) -> EventSocket:
        url = self.base_url.replace("http://", "ws://") + "/api/agents/v2/ws"
        header = [f"Authorization: Bearer {self.token}"] if header_auth else []
        return EventSocket(websocket.create_connection(url, header=header, timeout=10))


class EventSocket:
    """A websocket-client connection that reads JSON frames and remembers the close code."""

    def __init__(self, conn: websocket.WebSocket) -> None:
        self.conn = conn
        self.close_code: int | None = None

    def recv_json(self, timeout: float = 10) -> dict[str, Any] | None:
        """The next text frame as JSON, or None when the server closed the socket."""
        self.conn.settimeout(timeout)
        while True:
            opcode, data = self.conn.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                return json.loads(data)  # type: ignore[no-any-return]
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                return None
            if opcode == websocket.ABNF.OPCODE_PING:
                self.conn.pong(data)

    def send_json(self, message: Any) -> None:
        self.conn.send(json.dumps(message))

    def events_until_done(self, run_ids: set[str], timeout: float = 30) -> list[dict[str, Any]]:
        """Every event frame until each of `run_ids` sent a terminal event."""
        events: list[dict[str, Any]] = []
        pending = set(run_ids)
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"runs {pending} did not finish; got {len(events)} events")
            frame = self.recv_json(timeout=remaining)
            if frame is None:
                raise AssertionError(f"socket closed with {self.close_code}")
            if "seq" not in frame:
                continue
            events.append(frame)
            if frame["type"] in TERMINAL:
                pending.discard(frame["run_id"])
        return events

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - already closed by the server
            pass


def assert_consecutive(events: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    mine = [e for e in events if e["run_id"] == run_id]
    assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1)), [e["seq"] for e in mine]
    return mine


def readyz_until(base: str, status: int, timeout: float = 15) -> requests.Response:
    """/readyz's first answer with `status`: an answer is given again for up to a second
    (webapp/health.py), so a change shows within about that long, not at once."""
    answers: list[requests.Response] = []

    def answered() -> bool:
        answers.append(requests.get(f"{base}/readyz", timeout=10))
        return answers[-1].status_code == status

    try:
        wait_until(answered, timeout, f"/readyz answers {status}")
    except AssertionError:
        pass
    return answers[-1]

"""Test clients for the real server: HTTP with a token, and a socket that reads JSON frames."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import requests
import websocket

TERMINAL = {"agent_completed", "agent_failed", "agent_cancelled", "agent_timed_out"}


@dataclass
class User:
    user_id: str
    token: str
    base_url: str

    def on(self, base_url: str) -> "User":
        """The same user talking to another server."""
        return User(self.user_id, self.token, base_url)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.base_url + path, headers=self.headers, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.base_url + path, headers=self.headers, timeout=10, **kwargs)

    def submit(self, thread: str, agent: str, input: Any, prefix: str = "/api/agents") -> dict[str, Any]:
        response = self.post(f"{prefix}/v2/thread/{thread}/runs", json={"agent": agent, "input": input})
        assert response.status_code == 202, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_for_state(self, run_id: str, statuses: set[str], timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.get(f"/api/agents/v2/{run_id}/state").json()
            if state["status"] in statuses or time.monotonic() > deadline:
                return state  # type: ignore[no-any-return]
            time.sleep(0.05)

    def socket(self, *, header_auth: bool = True) -> "EventSocket":
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
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.get(f"{base}/readyz", timeout=10)
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)

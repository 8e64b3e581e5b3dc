"""A small synchronous client for Runlane's v2 HTTP API and its event socket.

It imports only the standard library, `requests` and `websocket` (websocket-client), so an
application can talk to Runlane without Flask, Celery or SQLAlchemy installed; the `runlane`
CLI's client commands are built on it. Reference: docs/client.md.

    with RunlaneClient("http://127.0.0.1:8000", token) as client:
        run = client.submit("demo", {"steps": 3}, thread_id="t1")
        for event in client.events(run.run_id):
            print(event.seq, event.type, event.data)
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests

from runlane.client_models import (
    TERMINAL_STATUSES,
    TERMINAL_TYPES,
    AgentInfo,
    Event,
    EventPage,
    Run,
    RunlaneAPIError,
    RunlaneConnectionError,
    RunPage,
    connection_reason,
)
from runlane.client_stream import EventStream

__all__ = [
    "AgentInfo", "DEFAULT_URL", "Event", "EventPage", "EventStream", "Run", "RunPage",
    "RunlaneAPIError", "RunlaneClient", "RunlaneConnectionError", "TERMINAL_STATUSES",
    "TERMINAL_TYPES",
]

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/agents/v2"


def _problem(response: requests.Response) -> RunlaneAPIError:
    """Turn an error answer into RunlaneAPIError, from problem+json when the server sent it."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "title" in body:
        errors = body.get("errors") if isinstance(body.get("errors"), list) else None
        return RunlaneAPIError(int(body.get("status") or response.status_code), str(body["title"]),
                               str(body.get("detail") or ""), errors=errors)
    detail = response.text.strip()[:200]
    return RunlaneAPIError(response.status_code, response.reason or "HTTP error", detail)


class RunlaneClient:
    """Talks to one Runlane server as one user (the bearer token's). Not thread-safe: give each
    thread its own client. Use as a context manager, or call `close()`, to release connections."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, *,
                 timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._http = requests.Session()
        self._http.headers["User-Agent"] = "runlane-client"
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_env(cls, **kwargs: Any) -> RunlaneClient:
        """A client for `RUNLANE_URL` (default http://127.0.0.1:8000) and `RUNLANE_TOKEN`."""
        return cls(os.environ.get("RUNLANE_URL") or DEFAULT_URL,
                   os.environ.get("RUNLANE_TOKEN") or None, **kwargs)

    def __enter__(self) -> RunlaneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{API_PREFIX}{path}"
        try:
            response = self._http.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise RunlaneConnectionError(f"{self.base_url}: {connection_reason(exc)}") from None
        except requests.Timeout:
            raise RunlaneConnectionError(
                f"{self.base_url}: no answer within {self.timeout:g}s") from None
        if response.status_code >= 400:
            raise _problem(response)
        try:
            return response.json()
        except ValueError:
            raise RunlaneAPIError(response.status_code, "Unexpected answer",
                                  f"{url} did not answer JSON; is this a Runlane server?") from None

    def submit(self, agent: str, input: Any = None, *, thread_id: str = "default",
               metadata: dict[str, Any] | None = None, idempotency_key: str | None = None,
               multitask_strategy: str | None = None) -> Run:
        """Submit a run to one of your threads (created on first use); it starts queued.

        Raises:
            RunlaneAPIError: 422 for an unknown agent or input failing its schema, 409 when
                `multitask_strategy="reject"` meets a busy thread, 429 over a per-user limit.
        """
        body: dict[str, Any] = {"agent": agent, "input": input}
        if metadata is not None:
            body["metadata"] = metadata
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if multitask_strategy is not None:
            body["multitask_strategy"] = multitask_strategy
        return Run.from_json(self._request("POST", f"/thread/{_seg(thread_id)}/runs", json=body))

    def state(self, run_id: str) -> Run:
        """The run as stored now (404 when it is not yours, exactly as when it does not exist)."""
        return Run.from_json(self._request("GET", f"/{_seg(run_id)}/state"))

    def runs(self, thread_id: str | None = None, *, limit: int = 20,
             cursor: str | None = None) -> RunPage:
        """One page of your runs, newest first: of one thread, or of all threads (None)."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        path = "/runs" if thread_id is None else f"/thread/{_seg(thread_id)}/runs"
        body = self._request("GET", path, params=params)
        return RunPage([Run.from_json(r) for r in body["items"]], body.get("next_cursor"))

    def iter_runs(self, thread_id: str | None = None) -> Iterator[Run]:
        """Every run of a thread (or of all threads), newest first, following the cursors."""
        cursor: str | None = None
        while True:
            page = self.runs(thread_id, limit=100, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, run_id: str) -> Run:
        """Ask a run to stop; answers `cancelling` until the agent stops, then `cancelled`.

        Raises:
            RunlaneAPIError: 409 when the run already finished otherwise.
        """
        return Run.from_json(self._request("POST", f"/{_seg(run_id)}/cancel"))

    def agents(self) -> list[AgentInfo]:
        body = self._request("GET", "/agents")
        return [AgentInfo(a["name"], a.get("description", ""), a.get("input_schema") or {})
                for a in body["items"]]

    def event_page(self, run_id: str, *, after: int = 0, limit: int = 100) -> EventPage:
        """Stored events with `seq > after`, over HTTP (no waiting for new ones)."""
        body = self._request("GET", f"/{_seg(run_id)}/events",
                             params={"after": after, "limit": limit})
        return EventPage([Event.from_json(e) for e in body["items"]], int(body["next_after"]))

    def stored_events(self, run_id: str, *, after: int = 0) -> Iterator[Event]:
        """Every event stored so far with `seq > after`, page by page."""
        while True:
            page = self.event_page(run_id, after=after, limit=1000)
            yield from page.items
            if not page.items:
                return
            after = page.next_after

    # -- the socket --------------------------------------------------------------------------

    @property
    def socket_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{API_PREFIX}/ws"

    def events(self, run_id: str, *, after: int = 0, retries: int = 10,
               idle_timeout: float = 30.0) -> EventStream:
        """Iterate a run's events with `seq > after`, live, until its terminal event; a dropped
        socket is reconnected and re-subscribed from the last seq yielded (see EventStream)."""
        return EventStream(self, run_id, after=after, retries=retries, idle_timeout=idle_timeout)

    def wait(self, run_id: str) -> Run:
        """Block until the run has finished (following its events), then return its state."""
        with self.events(run_id) as stream:
            for _ in stream:
                pass
        return self.state(run_id)


def _seg(value: str) -> str:
    return quote(value, safe="")

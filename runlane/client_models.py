"""What the Runlane client returns and raises: frozen dataclasses of the v2 API's JSON shapes
and the error carrying a problem+json answer. Standard library only."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TERMINAL_TYPES = frozenset(
    {"agent_completed", "agent_failed", "agent_cancelled", "agent_timed_out"})
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timed_out"})


class RunlaneAPIError(Exception):
    """The server refused a request; `status`, `title` and `detail` come from its
    application/problem+json answer (`errors` holds validation failures: path and message)."""

    def __init__(self, status: int, title: str, detail: str = "", *,
                 errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []


class RunlaneConnectionError(RunlaneAPIError):
    """The server could not be reached (refused, timed out, or gone for every reconnect
    attempt); `status` is 0 since no answer came."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, "Cannot reach the server", detail)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True, slots=True)
class Run:
    """A run resource as `GET /v2/{run_id}/state` returns it."""

    run_id: str
    thread_id: str
    agent: str
    status: str
    input: Any
    output: Any
    error: str | None
    metadata: dict[str, Any]
    attempt: int
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    last_seq: int

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Run:
        """Unknown fields are ignored, so a newer server does not break an older client."""
        return cls(
            run_id=body["run_id"], thread_id=body["thread_id"], agent=body["agent"],
            status=body["status"], input=body.get("input"), output=body.get("output"),
            error=body.get("error"), metadata=body.get("metadata") or {},
            attempt=int(body.get("attempt", 0)), created_at=_time(body.get("created_at")),
            started_at=_time(body.get("started_at")), finished_at=_time(body.get("finished_at")),
            last_seq=int(body.get("last_seq", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        """The resource as JSON-ready values (timestamps back to ISO 8601)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of a thread's runs, newest first; pass `next_cursor` to get the next."""

    items: list[Run]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a run: `seq` counts the run's events from 1, `cursor` all of the user's."""

    type: str
    run_id: str
    thread_id: str
    seq: int
    cursor: int
    ts: datetime | None
    data: Any

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Event:
        return cls(type=body["type"], run_id=body["run_id"], thread_id=body.get("thread_id", ""),
                   seq=int(body["seq"]), cursor=int(body.get("cursor", 0)),
                   ts=_time(body.get("ts")), data=body.get("data"))

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "run_id": self.run_id, "thread_id": self.thread_id,
                "seq": self.seq, "cursor": self.cursor,
                "ts": self.ts.isoformat() if self.ts else None, "data": self.data}


@dataclass(frozen=True, slots=True)
class EventPage:
    """Stored events of a run after some seq; ask again with `after=next_after` for more."""

    items: list[Event]
    next_after: int


@dataclass(frozen=True, slots=True)
class AgentInfo:
    name: str
    description: str
    input_schema: dict[str, Any] = field(default_factory=dict)


def connection_reason(exc: BaseException) -> str:
    """The innermost cause of a connection failure ("Connection refused"), not the nested
    reprs that requests and urllib3 wrap around it."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text.rsplit(": ", 1)[-1] if text else type(exc).__name__

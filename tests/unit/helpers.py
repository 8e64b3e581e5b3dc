"""Small builders and test doubles shared by the unit tests (no project code is patched)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain.context import RunLimits, UserExecutionContext
from domain.events import Event

CREATED = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def make_ctx(**overrides: Any) -> UserExecutionContext:
    fields: dict[str, Any] = {
        "user_id": "alice@example.com",
        "thread_id": "thread-1",
        "run_id": "run-1",
        "request_id": "req-1",
        "agent": "demo",
        "input": {"steps": 2, "text": "one two three"},
        "created_at": CREATED,
        "limits": RunLimits(),
    }
    fields.update(overrides)
    return UserExecutionContext(**fields)


class CollectingEmitter:
    """Implements the engine's Emitter protocol: records (type, data), numbers events from 1."""

    def __init__(self, run_id: str = "run-1", thread_id: str = "thread-1") -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self.emitted: list[tuple[str, Any]] = []

    def emit(self, type: str, data: Any) -> Event:
        self.emitted.append((type, data))
        seq = len(self.emitted)
        return Event(type=type, run_id=self.run_id, thread_id=self.thread_id, seq=seq,
                     cursor=seq, ts=datetime.now(UTC), data=data)

    @property
    def types(self) -> list[str]:
        return [t for t, _ in self.emitted]


class CollectingControl:
    """Implements the engine's Control protocol: `check` raises `exc` at its `at`-th call
    (when given); `finish` asks `record` whether the terminal state may be written (like the
    database's conditional UPDATE) and, when it may, emits the event through `emitter`."""

    def __init__(self, emitter: CollectingEmitter, record: RecordTerminal | None = None, *,
                 exc: BaseException | None = None, at: int = 2) -> None:
        self.emitter = emitter
        self.record = record or RecordTerminal()
        self.exc, self.at, self.checks = exc, at, 0

    def check(self) -> None:
        self.checks += 1
        if self.exc is not None and self.checks == self.at:
            raise self.exc

    def finish(self, to: Any, *, event_type: str, data: Any, output: Any = None,
               error: Any = None, **values: Any) -> Event | None:
        if not self.record(to, output, error):
            return None
        return self.emitter.emit(event_type, data)


class RecordTerminal:
    """Stands for the conditional terminal UPDATE: remembers each call, answers a fixed result."""

    def __init__(self, result: bool = True) -> None:
        self.result = result
        self.calls: list[tuple[Any, Any, Any]] = []

    def __call__(self, status: Any, output: Any, error: Any) -> bool:
        self.calls.append((status, output, error))
        return self.result


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    def publish(self, channel: str, data: str) -> bool:
        self.published.append((channel, data))
        return True

    def flush(self) -> bool:
        return True


class MemoryLog:
    """Stands for events.eventlog.EventLog without a database: numbers each run's events from
    1 and each owner's from 1 (the cursor), and keeps them in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def append(self, owner_id: str, run_id: str, thread_id: str, type: str, data: Any, *,
               attempt: int | None = None) -> Event:
        seq = 1 + sum(e.run_id == run_id for e in self.events)
        cursor = 1 + len(self.events)  # one owner per test is enough here
        event = Event(type=type, run_id=run_id, thread_id=thread_id, seq=seq, cursor=cursor,
                      ts=datetime.now(UTC), data=data)
        self.events.append(event)
        return event

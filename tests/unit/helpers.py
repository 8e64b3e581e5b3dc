"""Small builders and test doubles shared by the unit tests (no project code is patched)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from events.types import Event
from factories.context import RunLimits, UserExecutionContext

CREATED = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


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
    """Implements the engine's Emitter protocol: records (type, data), numbers events from 1;
    `transition` asks `record` whether the terminal state may be written (like the database)."""

    def __init__(self, run_id: str = "run-1", thread_id: str = "thread-1",
                 record: "RecordTerminal | None" = None) -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self.record = record or RecordTerminal()
        self.emitted: list[tuple[str, Any]] = []

    def transition(self, *, to: Any, from_statuses: Any, event_type: str, data: Any,
                   output: Any = None, error: Any = None, **values: Any) -> Event | None:
        if not self.record(to, output, error):
            return None
        return self.emit(event_type, data)

    def emit(self, type: str, data: Any) -> Event:
        self.emitted.append((type, data))
        seq = len(self.emitted)
        return Event(type=type, run_id=self.run_id, thread_id=self.thread_id, seq=seq,
                     cursor=seq, ts=datetime.now(timezone.utc), data=data)

    @property
    def types(self) -> list[str]:
        return [t for t, _ in self.emitted]


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

"""EventBridge: the engine's observer that numbers, logs and publishes one run's events."""
from __future__ import annotations

from typing import Any, Protocol

from events.eventlog import EventLog
from events.types import Event


class Publisher(Protocol):
    def publish(self, channel: str, data: str) -> bool: ...


class EventBridge:
    """Bound to exactly one user and one run; built fresh per run by WebSocketBridgeFactory."""

    def __init__(
        self, *, user_id: str, run_id: str, thread_id: str, channel: str,
        log: EventLog, publisher: Publisher,
    ) -> None:
        self.user_id = user_id
        self.run_id = run_id
        self.thread_id = thread_id
        self.channel = channel
        self._log = log
        self._publisher = publisher

    def emit(self, type: str, data: Any) -> Event:
        # Logged before published, so a client that misses the publish can replay it.
        event = self._log.append(self.user_id, self.run_id, self.thread_id, type, data)
        self._publisher.publish(self.channel, event.encode())
        return event


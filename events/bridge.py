"""EventBridge: logs and publishes one run's events; it changes no run's state."""
from __future__ import annotations

from typing import Any, Protocol

from domain.events import Event
from domain.status import RunStatus
from events.eventlog import EventLog
from runlane import metrics


class Publisher(Protocol):
    """Publishes encoded events; neither method raises (a failure is counted and logged,
    the event is already in the log)."""

    def publish(self, channel: str, data: str) -> bool:
        """False when the publish could not be made."""

    def flush(self) -> bool:
        """Confirm every publish made so far (one that defers replies reads them now);
        False when some could not be confirmed."""


class EventBridge:
    """Bound to exactly one user and one run; built fresh per run by WebSocketBridgeFactory."""

    def __init__(
        self, *, user_id: str, run_id: str, thread_id: str, channel: str,
        log: EventLog, publisher: Publisher, attempt: int | None = None,
        agent: str | None = None,
    ) -> None:
        self.user_id = user_id
        self.run_id = run_id
        self.thread_id = thread_id
        self.channel = channel
        self.attempt = attempt
        self.agent = agent  # a metrics label only
        self._log = log
        self._publisher = publisher

    def emit(self, type: str, data: Any) -> Event:
        """Log then publish; only while this bridge's attempt holds the run.

        Raises:
            domain.errors.Superseded: another attempt (or a cancel) took the run over.
        """
        # Logged before published, so a client that misses the publish can replay it.
        event = self._log.append(self.user_id, self.run_id, self.thread_id, type, data,
                                 attempt=self.attempt)
        self.announce(event)
        return event

    def announce(self, event: Event) -> None:
        """Publish an event of this run that is already logged (a failed publish is counted
        and logged; the client replays the event from the log)."""
        metrics.published(event.type, self._publisher.publish(self.channel, event.encode()))

    def announce_change(self, event: Event, status: RunStatus) -> None:
        """Publish the event of a status change, logged with it by storage/runstate.py."""
        sent = self._publisher.publish(self.channel, event.encode())
        # A status change is often a run's last event: no later publish would read its
        # reply and notice that it was lost, so it is confirmed now.
        metrics.published(event.type, sent and self._publisher.flush())
        metrics.run_status(status.value, self.agent)  # the one place every run's end passes

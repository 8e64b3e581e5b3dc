"""WebSocketBridgeFactory: an EventBridge bound to one user's channel and one run."""
from __future__ import annotations

from domain.context import UserExecutionContext
from events.bridge import EventBridge, Publisher
from events.channels import user_channel
from events.eventlog import EventLog


class WebSocketBridgeFactory:
    def __init__(self, *, log: EventLog, publisher: Publisher, channel_prefix: str) -> None:
        self._log = log
        self._publisher = publisher
        self._prefix = channel_prefix

    def create(self, ctx: UserExecutionContext, attempt: int | None = None) -> EventBridge:
        """The channel comes from the verified context's user id and nothing else."""
        return self.for_run(ctx.user_id, ctx.run_id, ctx.thread_id, attempt, agent=ctx.agent)

    def for_run(
        self, user_id: str, run_id: str, thread_id: str, attempt: int | None = None, *,
        agent: str | None = None,
    ) -> EventBridge:
        """A bridge for a run known by its owner-scoped row (web-side cancels, the reaper)."""
        return EventBridge(
            user_id=user_id, run_id=run_id, thread_id=thread_id,
            channel=user_channel(self._prefix, user_id), log=self._log,
            publisher=self._publisher, attempt=attempt, agent=agent,
        )

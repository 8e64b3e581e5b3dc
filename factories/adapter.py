"""FactoryAdapter: builds, from a legacy v1 request, the context the shared run service takes.

It assembles and submits; the v1 wire shapes and the answers in them are the v1 routes'
(webapp/v1_models.py).

The mapping rule for v1 inputs: `agent_type` names the agent (absent: the configured default
agent); the `message`/`query` text becomes that agent's input through its `input_from_text`
(echo: the string itself; demo: `{"text": message}`); `thread_id` (or `/run_agent`'s `id`)
names the caller's thread, and without one each run gets a thread of its own, `v1-<run id>`.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from domain.context import UserExecutionContext
from domain.errors import UnprocessableInput
from factories.agents import AgentInstanceFactory


class Submitter(Protocol):
    def submit(self, ctx: UserExecutionContext, metadata: dict[str, Any] | None, *,
               admit: Callable[[], None] | None = ...) -> tuple[Any, bool]: ...


class FactoryAdapter:
    """Turns v1 requests into UserExecutionContexts and submits them to the shared service."""

    def __init__(
        self, *, agents: AgentInstanceFactory, service: Submitter, default_agent: str
    ) -> None:
        self._agents = agents
        self._service = service
        self._default_agent = default_agent

    def context(
        self, *, user_id: str, request_id: str, text: str, agent: str | None = None,
        thread_id: str | None = None,
    ) -> UserExecutionContext:
        """The context a v1 request stands for; identity comes from the caller's token only."""
        name = agent or self._default_agent
        agent_cls = self._agents.registry.get(name)
        if agent_cls is None:
            raise UnprocessableInput(f"unknown agent {name!r}", errors=[
                {"path": "/agent_type", "message": "unknown agent"}])
        run_id = uuid.uuid4().hex
        return UserExecutionContext(
            user_id=user_id, thread_id=thread_id or f"v1-{run_id}", run_id=run_id,
            request_id=request_id, agent=name, input=agent_cls.input_from_text(text),
            created_at=datetime.now(UTC), limits=self._agents.limits(name),
        )

    def submit(self, ctx: UserExecutionContext, route: str,
               admit: Callable[[], None] | None = None) -> Any:
        """The same service call v2 makes (`admit`: see RunService.submit); the run remembers
        which v1 route started it."""
        run, _replayed = self._service.submit(ctx, {"api": "v1", "route": route}, admit=admit)
        return run

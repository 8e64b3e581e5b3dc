"""AgentInstanceFactory: a new agent object per run, looked up by name."""
from __future__ import annotations

from agents.base import Agent
from agents.registry import AgentRegistry
from factories.context import UserExecutionContext
from runlane.errors import UnprocessableInput


class AgentInstanceFactory:
    def __init__(self, registry: AgentRegistry) -> None:
        self.registry = registry

    def create(self, ctx: UserExecutionContext) -> Agent:
        """A fresh instance of the context's agent; instances are never reused across runs.

        Raises:
            UnprocessableInput: no agent of that name is registered.
        """
        agent_cls = self.registry.get(ctx.agent)
        if agent_cls is None:
            raise UnprocessableInput(f"unknown agent {ctx.agent!r}")
        return agent_cls()

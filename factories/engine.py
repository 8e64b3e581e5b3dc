"""ExecutionEngineFactory: wires an engine to its agent, bridge, tools and run record."""
from __future__ import annotations

from collections.abc import Mapping

from agents.base import Agent
from agents.tools import Tool
from events.bridge import EventBridge
from factories.context import UserExecutionContext
from tasks.engine import Control, ExecutionEngine


class ExecutionEngineFactory:
    def __init__(self, *, tools: Mapping[str, Tool]) -> None:
        self._tools = tools

    def create(
        self, ctx: UserExecutionContext, agent: Agent | None, bridge: EventBridge,
        control: Control | None = None,
    ) -> ExecutionEngine:
        """A new engine for one attempt; `control` lets it check cancellation and limits."""
        return ExecutionEngine(ctx, agent, emitter=bridge, tools=self._tools, control=control)

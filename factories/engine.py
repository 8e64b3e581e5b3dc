"""ExecutionEngineFactory: wires an engine to its agent, bridge, tools and run record.

The engine class is handed in (by tasks/worker.py) rather than imported: the engine lives in
tasks/, which uses factories/, so importing it here would close an import cycle. What both
sides need of each other is in `runlane.engine_api`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, Protocol, TypeVar

from agents.base import Agent
from agents.tools import Tool
from domain.context import UserExecutionContext
from events.bridge import EventBridge
from runlane.engine_api import Control

EngineT = TypeVar("EngineT")
EngineT_co = TypeVar("EngineT_co", covariant=True)


class EngineClass(Protocol[EngineT_co]):
    """How an engine is built: tasks.engine.ExecutionEngine has this signature."""

    def __call__(
        self, ctx: UserExecutionContext, agent: Agent | None, *, emitter: EventBridge,
        tools: Mapping[str, Tool], control: Control,
    ) -> EngineT_co: ...


class ExecutionEngineFactory(Generic[EngineT]):
    """Builds one engine per attempt, of the class it was given, with the process's tools."""

    def __init__(self, *, engine: EngineClass[EngineT], tools: Mapping[str, Tool]) -> None:
        self._engine = engine
        self._tools = tools

    def create(
        self, ctx: UserExecutionContext, agent: Agent | None, bridge: EventBridge,
        control: Control,
    ) -> EngineT:
        """A new engine for one attempt; `control` is the attempt's hold on the run (its
        checks between steps, the record of its end)."""
        return self._engine(ctx, agent, emitter=bridge, tools=self._tools, control=control)

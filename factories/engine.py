"""ExecutionEngineFactory: wires an engine to its agent, bridge, tools and run record."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.base import Agent
from agents.tools import Tool
from events.bridge import EventBridge
from factories.context import UserExecutionContext
from storage import queries
from storage.db import Database
from storage.models import RunStatus
from tasks.engine import ExecutionEngine


class ExecutionEngineFactory:
    def __init__(self, *, db: Database, tools: Mapping[str, Tool]) -> None:
        self._db = db
        self._tools = tools

    def create(
        self, ctx: UserExecutionContext, agent: Agent | None, bridge: EventBridge
    ) -> ExecutionEngine:
        def record_terminal(status: RunStatus, output: Any, error: str | None) -> bool:
            with self._db.session() as session:
                return queries.finish_run(
                    session, ctx.user_id, ctx.run_id, status=status, output=output, error=error
                )

        return ExecutionEngine(
            ctx, agent, emitter=bridge, tools=self._tools, record_terminal=record_terminal
        )

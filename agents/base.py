"""The agent API: an agent sees only the RunContext it is handed, never a socket or a user table."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol


class RunContext(Protocol):
    """What a running agent may do; the engine implements it and emits the events."""

    @property
    def input(self) -> Any: ...

    def think(self, text: str) -> None:
        """Report reasoning to the user (an `agent_thinking` event)."""

    def call_tool(self, name: str, **arguments: Any) -> Any:
        """Run a registered tool, wrapped in `tool_executing` / `tool_completed` events."""


class AgentError(Exception):
    """An agent's own failure; its message becomes the run's `error`."""


class Agent(ABC):
    """Base of every agent. One instance serves one run and is then thrown away."""

    name: ClassVar[str]
    description: ClassVar[str]
    input_schema: ClassVar[dict[str, Any]] = {}
    # Per-agent time limits in seconds; None means the deployment's defaults.
    soft_time_limit: ClassVar[float | None] = None
    hard_time_limit: ClassVar[float | None] = None

    @classmethod
    def input_from_text(cls, text: str) -> Any:
        """The input a v1 `message`/`query` string stands for (the v1 mapping rule)."""
        return text

    @abstractmethod
    def run(self, ctx: RunContext) -> Any:
        """Do the work and return the run's output (JSON-serialisable)."""

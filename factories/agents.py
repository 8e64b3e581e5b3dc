"""AgentInstanceFactory: a new agent object per run, looked up by name."""
from __future__ import annotations

from collections.abc import Mapping

from agents.base import Agent
from agents.registry import AgentRegistry, default_registry
from domain.context import RunLimits, UserExecutionContext
from domain.errors import UnprocessableInput
from runlane.settings import Settings


class AgentInstanceFactory:
    def __init__(
        self, registry: AgentRegistry, *, default_limits: RunLimits | None = None,
        time_limits: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.registry = registry
        self._defaults = default_limits or RunLimits()
        self._overrides = dict(time_limits or {})

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentInstanceFactory:
        """The deployment's agents, with the time limits its configuration gives them."""
        return cls(
            default_registry(),
            default_limits=RunLimits(soft_time_limit=settings.default_soft_time_limit,
                                     hard_time_limit=settings.default_hard_time_limit),
            time_limits=settings.agent_time_limits,
        )

    def limits(self, agent: str) -> RunLimits:
        """Configuration first, then the agent's own limits, then the deployment defaults."""
        if agent in self._overrides:
            soft, hard = self._overrides[agent]
        else:
            agent_cls = self.registry.get(agent)
            soft = (agent_cls and agent_cls.soft_time_limit) or self._defaults.soft_time_limit
            hard = (agent_cls and agent_cls.hard_time_limit) or self._defaults.hard_time_limit
        return self._defaults.model_copy(update={"soft_time_limit": soft,
                                                  "hard_time_limit": max(hard, soft)})

    def create(self, ctx: UserExecutionContext) -> Agent:
        """A fresh instance of the context's agent; instances are never reused across runs.

        Raises:
            UnprocessableInput: no agent of that name is registered.
        """
        agent_cls = self.registry.get(ctx.agent)
        if agent_cls is None:
            raise UnprocessableInput(f"unknown agent {ctx.agent!r}")
        return agent_cls()

"""Name → agent class; built per process (or per test), never a mutable module global."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from agents.base import Agent
from agents.builtin import DemoAgent, EchoAgent


class AgentRegistry:
    """The agents a deployment can run."""

    def __init__(self, agents: Iterable[type[Agent]] = ()) -> None:
        self._agents: dict[str, type[Agent]] = {}
        for agent in agents:
            self.register(agent)

    def register(self, agent: type[Agent]) -> None:
        self._agents[agent.name] = agent

    def get(self, name: str) -> type[Agent] | None:
        return self._agents.get(name)

    def __iter__(self) -> Iterator[type[Agent]]:
        return iter(sorted(self._agents.values(), key=lambda a: a.name))

    def __contains__(self, name: object) -> bool:
        return name in self._agents


def default_registry() -> AgentRegistry:
    return AgentRegistry([EchoAgent, DemoAgent])

"""ExecutionEngine: runs one agent for one run, turning what it does into events.

Built fresh per run by ExecutionEngineFactory (factories/engine.py), which tasks/worker.py
hands this class; it owns the run from claim to terminal state. `Control`, the checks it makes
before each step, is declared in runlane.engine_api so the factory need not import this module.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from celery.exceptions import SoftTimeLimitExceeded

from agents.base import Agent, AgentError
from agents.tools import Tool, ToolError
from domain.context import UserExecutionContext
from domain.errors import Superseded
from domain.events import Event, EventType
from domain.status import RunStatus
from runlane.engine_api import Control
from tasks.lifecycle import RunCancelled, RunTimedOut

log = logging.getLogger(__name__)


class Emitter(Protocol):
    def emit(self, type: str, data: Any) -> Event: ...


class Observer(Protocol):
    def on_event(self, event: Event) -> None: ...


@dataclass(frozen=True)
class Outcome:
    status: RunStatus | None  # None: another attempt holds the run, nothing was recorded
    output: Any = None
    error: str | None = None


_TERMINAL_EVENTS = {
    RunStatus.COMPLETED: EventType.AGENT_COMPLETED,
    RunStatus.FAILED: EventType.AGENT_FAILED,
    RunStatus.CANCELLED: EventType.AGENT_CANCELLED,
    RunStatus.TIMED_OUT: EventType.AGENT_TIMED_OUT,
}


def started_data(ctx: UserExecutionContext, attempt: int | None) -> dict[str, Any]:
    """The `agent_started` event's data (logged by the engine, or with the claim)."""
    return {"agent": ctx.agent, "input": ctx.input, "attempt": attempt}


class StepLimitExceeded(AgentError):
    """The agent made more thinking/tool steps than its limits allow."""


class _AgentRunContext:
    """The RunContext handed to the agent: it can think and call tools, nothing else."""

    def __init__(self, engine: ExecutionEngine) -> None:
        self._engine = engine

    @property
    def input(self) -> Any:
        return self._engine.ctx.input

    def think(self, text: str) -> None:
        self._engine.step()
        self._engine.emit(EventType.AGENT_THINKING, {"text": str(text)})

    def call_tool(self, name: str, **arguments: Any) -> Any:
        return self._engine.call_tool(name, arguments)


class ExecutionEngine:
    """Executes `agent` for `ctx`, emitting through `emitter` and recording the end state."""

    def __init__(
        self,
        ctx: UserExecutionContext,
        agent: Agent | None,
        *,
        emitter: Emitter,
        tools: Mapping[str, Tool],
        control: Control,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.ctx = ctx
        self.agent = agent
        self._emitter = emitter
        self._tools = tools
        self._control = control
        self._observers = observers
        self._steps = 0
        self._calls = 0

    def emit(self, type: EventType, data: Any) -> Event:
        event = self._emitter.emit(type.value, data)
        self._notify(event)
        return event

    def _notify(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer.on_event(event)
            except Exception:  # an observer must never break a run
                log.exception("observer %r failed on %s", observer, event.type)

    def step(self) -> None:
        self._control.check()
        self._steps += 1
        if self._steps > self.ctx.limits.max_steps:
            raise StepLimitExceeded(f"more than {self.ctx.limits.max_steps} steps")

    def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        self.step()
        tool = self._tools.get(name)
        if tool is None:
            raise AgentError(f"unknown tool {name!r}")
        self._calls += 1
        call_id = self._calls
        self.emit(EventType.TOOL_EXECUTING,
                  {"tool": name, "call_id": call_id, "arguments": arguments})
        try:
            result = tool.function(**arguments)
        except (ToolError, TypeError) as exc:
            self.emit(EventType.TOOL_COMPLETED,
                      {"tool": name, "call_id": call_id, "error": str(exc)})
            raise AgentError(f"tool {name} failed: {exc}") from None
        self.emit(EventType.TOOL_COMPLETED, {"tool": name, "call_id": call_id, "result": result})
        return result

    def run(self, started: Event | None = None) -> Outcome:
        """Run the agent to a terminal state; never raises for the agent's own failures.

        `started`: the run's `agent_started` when the worker already logged it (in the claim's
        transaction) and published it; the engine then only tells its observers.
        """
        try:
            if started is None:
                self.emit(EventType.AGENT_STARTED,
                          started_data(self.ctx, getattr(self._emitter, "attempt", None)))
            else:
                self._notify(started)
            if self.agent is None:
                return self.finish(Outcome(RunStatus.FAILED,
                                           error=f"agent {self.ctx.agent!r} unavailable"))
            output = self.agent.run(_AgentRunContext(self))
            json.dumps(output)
        except Superseded:
            log.info("run %s: attempt superseded; stopping without writing", self.ctx.run_id)
            return Outcome(None)
        except RunCancelled as exc:
            return self.finish(Outcome(RunStatus.CANCELLED, error=str(exc)))
        except (RunTimedOut, SoftTimeLimitExceeded) as exc:
            reason = str(exc) if isinstance(exc, RunTimedOut) else "soft time limit passed"
            return self.finish(Outcome(RunStatus.TIMED_OUT, error=reason))
        except Exception as exc:  # the agent's failure is the run's failure, not the worker's
            if not isinstance(exc, AgentError):
                log.warning("agent %s raised %s", self.ctx.agent, type(exc).__name__, exc_info=True)
            return self.finish(Outcome(RunStatus.FAILED, error=str(exc) or type(exc).__name__))
        return self.finish(Outcome(RunStatus.COMPLETED, output=output))

    def finish(self, outcome: Outcome) -> Outcome:
        """Record the terminal state and emit its event in one transaction, so a client that
        reads /state after the terminal event always sees the terminal status."""
        assert outcome.status is not None
        if outcome.status is RunStatus.COMPLETED:
            data: dict[str, Any] = {"output": outcome.output}
        else:
            data = {"error": outcome.error}
        event = self._control.finish(
            outcome.status, event_type=_TERMINAL_EVENTS[outcome.status].value, data=data,
            output=outcome.output, error=outcome.error,
        )
        if event is None:
            log.warning("run %s was no longer executing; %s not recorded", self.ctx.run_id,
                        outcome.status.value)
            return Outcome(None)
        self._notify(event)
        return outcome

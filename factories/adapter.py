"""FactoryAdapter: serves the legacy v1 contract through the v2 context and service.

The mapping rule for v1 inputs: `agent_type` names the agent (absent: the configured default
agent); the `message`/`query` text becomes that agent's input through its `input_from_text`
(echo: the string itself; demo: `{"text": message}`); `thread_id` (or `/run_agent`'s `id`)
names the caller's thread, and without one each run gets a thread of its own, `v1-<run id>`.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.registry import AgentRegistry
from factories.agents import AgentInstanceFactory
from factories.context import UserExecutionContext
from runlane.errors import UnprocessableInput
from runlane.ids import ID_PATTERN


class RunView(Protocol):
    """What the adapter needs to know of a run to answer in v1 shapes."""

    run_id: str
    thread_id: str
    agent: str
    status: str
    output: Any
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class Submitter(Protocol):
    def submit(self, ctx: UserExecutionContext, metadata: dict[str, Any] | None, *,
               admit: Callable[[], None] | None = ...) -> tuple[Any, bool]: ...


# -- the v1 wire shapes --------------------------------------------------------------------

class _V1Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class V1Execute(_V1Body):
    agent_type: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=100_000)
    thread_id: str | None = Field(default=None, pattern=ID_PATTERN)
    timeout: float = Field(default=30, gt=0, le=120)

    @classmethod
    def openapi_refine(cls, schema: dict[str, Any], agents: AgentRegistry) -> dict[str, Any]:
        """`agent_type` is documented as the deployment's agent names."""
        properties = dict(schema["properties"])
        properties["agent_type"] = {**properties["agent_type"], "enum": [a.name for a in agents]}
        return {**schema, "properties": properties}


class V1RunAgent(_V1Body):
    query: str = Field(max_length=100_000)
    id: str | None = Field(default=None, pattern=ID_PATTERN)


class V1Message(_V1Body):
    message: str = Field(max_length=100_000)
    thread_id: str | None = Field(default=None, pattern=ID_PATTERN)


class V1Started(BaseModel):
    run_id: str
    thread_id: str
    status: str = "started"


class V1ExecuteFinished(BaseModel):
    success: bool
    run_id: str
    thread_id: str
    status: str
    output: Any
    error: str | None
    events: list[dict[str, Any]]


class V1ExecutePending(BaseModel):
    run_id: str
    thread_id: str
    status: str


class V1Status(BaseModel):
    run_id: str
    status: str
    is_complete: bool
    error: str | None


class V1State(BaseModel):
    run_id: str
    thread_id: str
    agent_type: str
    status: str
    result: Any
    error: str | None
    created_at: datetime
    completed_at: datetime | None


class V1RunSummary(BaseModel):
    run_id: str
    agent_type: str
    status: str
    created_at: datetime


class V1ThreadRuns(BaseModel):
    thread_id: str
    runs: list[V1RunSummary]


TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timed_out"})


class FactoryAdapter:
    """Turns v1 requests into UserExecutionContexts for the shared service, and runs into v1 answers."""

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
            raise UnprocessableInput(
                f"unknown agent {name!r}", errors=[{"path": "/agent_type", "message": "unknown agent"}]
            )
        run_id = uuid.uuid4().hex
        return UserExecutionContext(
            user_id=user_id, thread_id=thread_id or f"v1-{run_id}", run_id=run_id,
            request_id=request_id, agent=name, input=agent_cls.input_from_text(text),
            created_at=datetime.now(timezone.utc), limits=self._agents.limits(name),
        )

    def submit(self, ctx: UserExecutionContext, route: str,
               admit: Callable[[], None] | None = None) -> Any:
        """The same service call v2 makes (`admit`: see RunService.submit); the run remembers
        which v1 route started it."""
        run, _replayed = self._service.submit(ctx, {"api": "v1", "route": route}, admit=admit)
        return run

    @staticmethod
    def started(run: RunView) -> V1Started:
        return V1Started(run_id=run.run_id, thread_id=run.thread_id)

    @staticmethod
    def execute_answer(run: RunView, events: list[dict[str, Any]]) -> V1ExecuteFinished | V1ExecutePending:
        if run.status not in TERMINAL_STATUSES:
            return V1ExecutePending(run_id=run.run_id, thread_id=run.thread_id, status=run.status)
        return V1ExecuteFinished(
            success=run.status == "completed", run_id=run.run_id, thread_id=run.thread_id,
            status=run.status, output=run.output, error=run.error, events=events,
        )

    @staticmethod
    def status(run: RunView) -> V1Status:
        return V1Status(run_id=run.run_id, status=run.status,
                        is_complete=run.status in TERMINAL_STATUSES, error=run.error)

    @staticmethod
    def state(run: RunView) -> V1State:
        return V1State(
            run_id=run.run_id, thread_id=run.thread_id, agent_type=run.agent, status=run.status,
            result=run.output, error=run.error, created_at=run.created_at,
            completed_at=run.finished_at,
        )

    @staticmethod
    def thread_runs(thread_id: str, runs: Sequence[RunView]) -> V1ThreadRuns:
        return V1ThreadRuns(
            thread_id=thread_id,
            runs=[V1RunSummary(run_id=r.run_id, agent_type=r.agent, status=r.status,
                               created_at=r.created_at) for r in runs],
        )

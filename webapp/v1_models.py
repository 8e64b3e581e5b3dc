"""The legacy v1 wire shapes, and the answers v1 routes give in them.

They belong to the v1 routes (webapp/v1.py) alone: factories/adapter.py only turns a v1
request into the context the shared run service takes. The mapping rules of v1 inputs are
described there.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.registry import AgentRegistry
from domain.ids import ID_PATTERN
from domain.status import TERMINAL

_TERMINAL = frozenset(status.value for status in TERMINAL)


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


# -- answers ---------------------------------------------------------------------------------

def started(run: RunView) -> V1Started:
    return V1Started(run_id=run.run_id, thread_id=run.thread_id)


def execute_answer(
    run: RunView, events: list[dict[str, Any]],
) -> V1ExecuteFinished | V1ExecutePending:
    if run.status not in _TERMINAL:
        return V1ExecutePending(run_id=run.run_id, thread_id=run.thread_id, status=run.status)
    return V1ExecuteFinished(
        success=run.status == "completed", run_id=run.run_id, thread_id=run.thread_id,
        status=run.status, output=run.output, error=run.error, events=events,
    )


def status(run: RunView) -> V1Status:
    return V1Status(run_id=run.run_id, status=run.status,
                    is_complete=run.status in _TERMINAL, error=run.error)


def state(run: RunView) -> V1State:
    return V1State(
        run_id=run.run_id, thread_id=run.thread_id, agent_type=run.agent, status=run.status,
        result=run.output, error=run.error, created_at=run.created_at,
        completed_at=run.finished_at,
    )


def thread_runs(thread_id: str, runs: Sequence[RunView]) -> V1ThreadRuns:
    return V1ThreadRuns(
        thread_id=thread_id,
        runs=[V1RunSummary(run_id=r.run_id, agent_type=r.agent, status=r.status,
                           created_at=r.created_at) for r in runs],
    )

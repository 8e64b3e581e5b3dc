"""Request and response bodies of the v2 API; the same models validate and describe."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SubmitRun(BaseModel):
    """Body of `POST /v2/thread/{thread_id}/runs`."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=64)
    input: Any = None
    metadata: dict[str, Any] | None = None


class RunResource(BaseModel):
    run_id: str
    thread_id: str
    agent: str
    status: str
    input: Any
    output: Any
    error: str | None
    metadata: dict[str, Any]
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_seq: int


class RunPage(BaseModel):
    items: list[RunResource]
    next_cursor: str | None


class AgentInfo(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]


class AgentList(BaseModel):
    items: list[AgentInfo]

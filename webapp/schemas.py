"""Request and response bodies of the v2 API; the same models validate and describe."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field

from agents.registry import AgentRegistry


class SubmitRun(BaseModel):
    """Body of `POST /v2/thread/{thread_id}/runs`."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=64)
    input: Any = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="the same key from the same user returns the same run",
    )
    multitask_strategy: Literal["reject", "enqueue", "interrupt"] = Field(
        default="enqueue",
        description="when the thread has an active run: 409 (reject), start after it "
                    "(enqueue) or cancel it first (interrupt)",
    )

    @classmethod
    def openapi_refine(cls, schema: dict[str, Any], agents: AgentRegistry) -> dict[str, Any]:
        """Documented as one variant per deployed agent, each with that agent's input schema
        (the service validates exactly that), so generated clients and fuzzers are exact."""
        variants = []
        for agent in agents:
            properties = dict(schema["properties"])
            properties["agent"] = {"const": agent.name, "title": "Agent"}
            properties["input"] = agent.input_schema or {}
            accepts_null = Draft202012Validator(agent.input_schema or {}).is_valid(None)
            required = ["agent"] if accepts_null else ["agent", "input"]
            variants.append({**schema, "title": f"SubmitRun[{agent.name}]",
                             "properties": properties, "required": required})
        return {"title": schema.get("title", "SubmitRun"), "oneOf": variants}


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


class EventOut(BaseModel):
    type: str
    run_id: str
    thread_id: str
    seq: int
    cursor: int
    ts: datetime
    data: Any


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: int = Field(description="pass as `after` to get the next page")


class MigrationRoute(BaseModel):
    route: str
    methods: list[str]
    version: str
    prefix: str
    factory_backed: bool
    deprecated: bool
    mode: str | None
    sunset: str | None
    successor: str | None
    calls: int | None


class MigrationReport(BaseModel):
    mode: str
    overrides: dict[str, str]
    routes: list[MigrationRoute]


class Problem(BaseModel):
    """RFC 9457 problem details; validation failures add `errors`."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, str]] | None = None

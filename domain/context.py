"""UserExecutionContext: everything one run needs to know about whose it is.

The web builds one per request from the verified token; the worker rebuilds it from the
signed string in the task message (factories/context.py signs and verifies). Nothing else
carries identity.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.errors import MalformedContext
from domain.ids import ID_PATTERN, USER_PATTERN


class RunLimits(BaseModel):
    """Per-run bounds the engine enforces."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_steps: int = Field(default=1000, ge=1)
    soft_time_limit: float = Field(default=300.0, gt=0)
    hard_time_limit: float = Field(default=360.0, gt=0)


class UserExecutionContext(BaseModel):
    """Immutable; one per request on the web side and one per run on the worker side."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    user_id: str = Field(pattern=USER_PATTERN)
    thread_id: str = Field(pattern=ID_PATTERN)
    run_id: str = Field(pattern=ID_PATTERN)
    request_id: str = Field(min_length=1, max_length=64)
    agent: str = Field(min_length=1, max_length=64)
    input: Any
    created_at: datetime
    limits: RunLimits = RunLimits()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (datetimes as ISO 8601)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any) -> UserExecutionContext:
        """Rebuild from `to_dict()` output.

        Raises:
            MalformedContext: a field is missing, unknown or of the wrong type.
        """
        if not isinstance(data, dict):
            raise MalformedContext("context must be a JSON object")
        return cls.from_json(json.dumps(data))

    @classmethod
    def from_json(cls, text: str | bytes) -> UserExecutionContext:
        """Rebuild from JSON text (what a signed task message carries).

        Raises:
            MalformedContext: not a JSON object, or a field is missing, unknown or of the
                wrong type.
        """
        try:
            # JSON mode accepts ISO strings for datetimes while staying strict elsewhere.
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise MalformedContext(problems) from None

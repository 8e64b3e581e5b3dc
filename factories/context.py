"""UserExecutionContext: everything one run needs to know about whose it is, and its wire form.

The web builds one per request from the verified token; the worker rebuilds it from the
signed string in the task message. Nothing else carries identity.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runlane.errors import ContextTampered, MalformedContext

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
USER_PATTERN = r"^[A-Za-z0-9_.@-]{1,128}$"
_SALT = "runlane.context.v1"


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
    def from_dict(cls, data: Any) -> "UserExecutionContext":
        """Rebuild from `to_dict()` output.

        Raises:
            MalformedContext: a field is missing, unknown or of the wrong type.
        """
        if not isinstance(data, dict):
            raise MalformedContext("context must be a JSON object")
        try:
            # JSON mode accepts ISO strings for datetimes while staying strict elsewhere.
            return cls.model_validate_json(json.dumps(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise MalformedContext(problems) from None


def sign_context(ctx: UserExecutionContext, key: bytes) -> str:
    """The string a task message carries: the context plus an HMAC only servers can make."""
    return str(URLSafeSerializer(key, salt=_SALT).dumps(ctx.to_dict()))


def claimed_run_id(token: str) -> str | None:
    """The run id a (possibly forged) message names, read without trusting it: only to end
    that run as failed when the message is refused."""
    try:
        _valid, data = URLSafeSerializer(b"", salt=_SALT).loads_unsafe(token)
    except Exception:  # noqa: BLE001 - garbage in, nothing to report on
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return run_id if isinstance(run_id, str) and len(run_id) <= 64 else None


def verify_context(token: str, key: bytes) -> UserExecutionContext:
    """Check the HMAC, then rebuild the context.

    Raises:
        ContextTampered: the signature does not match (forged or altered message).
        MalformedContext: the signed payload is not a valid context.
    """
    try:
        data = URLSafeSerializer(key, salt=_SALT).loads(token)
    except BadSignature:
        raise ContextTampered("task context signature does not verify") from None
    return UserExecutionContext.from_dict(data)

"""UserExecutionContext: everything one run needs to know about whose it is, and its wire form.

The web builds one per request from the verified token; the worker rebuilds it from the
signed string in the task message. Nothing else carries identity.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, Serializer, URLSafeSerializer
from itsdangerous.encoding import base64_encode
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runlane.errors import ContextTampered, MalformedContext
from runlane.ids import ID_PATTERN, USER_PATTERN

_SALT = "runlane.context.v1"
COMPRESS_FROM = 2048  # payload bytes from which signing tries zlib


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


class _JSONText:
    """itsdangerous's payload (de)serializer, passing JSON text through: the context writes
    and parses its own JSON (pydantic), so verifying does not decode, re-encode and decode it
    again, which was much of a verify's cost (docs/benchmarks.md)."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return obj if isinstance(obj, str) else json.dumps(obj)

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> str | bytes:
        return text


class _ContextSerializer(URLSafeSerializer):
    """Compresses only payloads large enough to gain from it. itsdangerous tries zlib on
    every payload; a typical context is a few hundred bytes, where the attempt cost more
    than it saved (docs/benchmarks.md), while a context carrying a large input still shrinks
    in the queue. Loading accepts both forms (also messages signed before this change)."""

    def dump_payload(self, obj: Any) -> bytes:
        raw = Serializer.dump_payload(self, obj)
        if len(raw) >= COMPRESS_FROM:
            return super().dump_payload(obj)  # itsdangerous's own: zlib when it is smaller
        return base64_encode(raw)


class ContextSigner:
    """Signs and verifies task contexts with one key. Build one per process and keep it: it
    is stateless apart from the key, and building the serializer per call was a visible
    part of a sign's cost (docs/benchmarks.md)."""

    def __init__(self, key: bytes) -> None:
        self._serializer = _ContextSerializer(key, salt=_SALT, serializer=_JSONText)

    def sign(self, ctx: UserExecutionContext) -> str:
        """The string a task message carries: the context plus an HMAC only servers make."""
        return str(self._serializer.dumps(ctx.model_dump_json()))

    def verify(self, token: str) -> UserExecutionContext:
        """Check the HMAC, then rebuild the context.

        Raises:
            ContextTampered: the signature does not match (forged or altered message).
            MalformedContext: the signed payload is not a valid context.
        """
        try:
            text = self._serializer.loads(token)
        except BadSignature:
            raise ContextTampered("task context signature does not verify") from None
        return UserExecutionContext.from_json(text)


def sign_context(ctx: UserExecutionContext, key: bytes) -> str:
    """`ContextSigner(key).sign(ctx)`, for one-off use (servers keep a signer)."""
    return ContextSigner(key).sign(ctx)


def verify_context(token: str, key: bytes) -> UserExecutionContext:
    """`ContextSigner(key).verify(token)`, for one-off use (servers keep a signer)."""
    return ContextSigner(key).verify(token)


def claimed_run_id(token: str) -> str | None:
    """The run id a (possibly forged) message names, read without trusting it: only to end
    that run as failed when the message is refused."""
    try:
        _valid, data = URLSafeSerializer(b"", salt=_SALT).loads_unsafe(token)
    except Exception:  # noqa: BLE001 - garbage in, nothing to report on
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return run_id if isinstance(run_id, str) and len(run_id) <= 64 else None

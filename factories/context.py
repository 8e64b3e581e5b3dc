"""The context's wire form: signed by the web, verified by the worker before anything runs.

Only a server holding the key can make a context the worker accepts, so identity in a task
message is as good as the token it was built from.
"""
from __future__ import annotations

import json
from typing import Any

from itsdangerous import BadSignature, Serializer, URLSafeSerializer
from itsdangerous.encoding import base64_encode

from domain.context import UserExecutionContext
from domain.errors import ContextTampered

_SALT = "runlane.context.v1"
COMPRESS_FROM = 2048  # payload bytes from which signing tries zlib


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

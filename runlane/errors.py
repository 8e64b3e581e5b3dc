"""One exception tree for everything a caller may need to act on; translated once at the edge."""
from __future__ import annotations

from typing import Any


class RunlaneError(Exception):
    """Base of every error Runlane raises on purpose."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class ConfigurationError(RunlaneError):
    """The process cannot start as configured (missing key, missing Redis URL)."""

    title = "Configuration error"


class InvalidInput(RunlaneError):
    """A request body or parameter is malformed (HTTP 400)."""

    status = 400
    title = "Bad request"


class Unauthenticated(RunlaneError):
    """No token, or a token that does not verify (HTTP 401)."""

    status = 401
    title = "Unauthorized"


class NotFound(RunlaneError):
    """The resource does not exist *for this caller* (another user's answers the same)."""

    status = 404
    title = "Not found"


class Conflict(RunlaneError):
    """The request conflicts with the resource's current state (HTTP 409)."""

    status = 409
    title = "Conflict"


class PayloadTooLarge(RunlaneError):
    """The request body exceeds the configured limit (HTTP 413)."""

    status = 413
    title = "Payload too large"


class TooManyRequests(RunlaneError):
    """A per-user limit was reached; retry after `retry_after` seconds (HTTP 429)."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str = "", *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class UnprocessableInput(RunlaneError):
    """Well-formed input that fails validation: unknown agent, schema errors (HTTP 422)."""

    status = 422
    title = "Unprocessable input"


class ContextTampered(RunlaneError):
    """A task's serialized context failed signature verification: never execute it."""

    title = "Context signature invalid"


class MalformedContext(RunlaneError):
    """A serialized context is missing fields or has fields of the wrong type."""

    title = "Malformed context"

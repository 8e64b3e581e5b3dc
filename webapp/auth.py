"""The HTTP side of bearer tokens: the Authorization header, and the decorator that turns
it into the request's Principal.

Verification itself is runlane/tokens.py, free of Flask. The app's TokenVerifier is read
from the app (`current_app.extensions["runlane"]`), never imported from webapp/extensions.py:
the composition root builds the verifier and imports the views that use this decorator, so
an import back into it would close a cycle.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from domain.errors import Unauthenticated
from runlane import logs
from runlane.tokens import Principal, TokenVerifier

F = TypeVar("F", bound=Callable[..., Any])


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None for any other."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def app_tokens() -> TokenVerifier:
    """The TokenVerifier of the app handling the current request (create_app puts it there)."""
    tokens: TokenVerifier = current_app.extensions["runlane"].tokens
    return tokens


def require_principal(view: F) -> F:
    """Reject the request with 401 unless it carries a valid bearer token."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise Unauthenticated("missing bearer token")
        g.principal = app_tokens().verify(token)
        logs.bind(user_id=g.principal.user_id)  # reset with the request's log context
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def current_principal() -> Principal:
    """The Principal `require_principal` proved for this request."""
    principal: Principal = g.principal
    return principal

"""Bearer tokens: the only place a token is read, verified or issued."""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import jwt
from flask import g, request

from factories.context import USER_PATTERN
from runlane.errors import Unauthenticated
from runlane.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
_USER = re.compile(USER_PATTERN)


@dataclass(frozen=True)
class Principal:
    """Who is calling, as proven by a verified token."""

    user_id: str


def issue_token(settings: Settings, secret: str, user_id: str, ttl: int | None = None) -> str:
    """A signed HS256 JWT for `user_id` (development and tests)."""
    if not _USER.match(user_id):
        raise ValueError(f"user id must match {USER_PATTERN}")
    now = int(time.time())
    claims = {
        "sub": user_id, "iat": now, "nbf": now, "exp": now + (ttl or settings.token_ttl_seconds),
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(settings: Settings, secret: str, token: str) -> Principal:
    """Check signature, expiry, not-before, issuer and audience.

    Raises:
        Unauthenticated: any check fails (the reason is not echoed to the client).
    """
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], audience=settings.jwt_audience,
            issuer=settings.jwt_issuer, leeway=5,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.InvalidTokenError:
        raise Unauthenticated("invalid or expired token") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not _USER.match(subject):
        raise Unauthenticated("invalid token subject")
    return Principal(user_id=subject)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def require_principal(view: F) -> F:
    """Reject the request with 401 unless it carries a valid bearer token."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from webapp.extensions import state  # noqa: PLC0415 - avoids an import cycle

        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise Unauthenticated("missing bearer token")
        st = state()
        g.principal = verify_token(st.settings, st.jwt_secret, token)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def current_principal() -> Principal:
    principal: Principal = g.principal
    return principal

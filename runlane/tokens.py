"""Bearer tokens, without the web: verified, issued and their keys resolved here.

Flask-free so that what needs a token and no HTTP request (the `runlane token` command,
tests, benchmarks) loads neither Flask nor the web's process state; webapp/auth.py is the
HTTP side (the Authorization header, the decorator) on top of it.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from domain.errors import ConfigurationError, Unauthenticated
from domain.ids import USER_PATTERN, is_user_id
from runlane.settings import Settings


@dataclass(frozen=True)
class Principal:
    """Who is calling, as proven by a verified token."""

    user_id: str
    admin: bool = False


def issue_token(
    settings: Settings, secret: str, user_id: str, ttl: int | None = None, *,
    kid: str | None = None, roles: tuple[str, ...] = (), now: float | None = None,
) -> str:
    """A signed HS256 JWT for `user_id` (development and tests), issued at `now` (seconds
    since the epoch; the current time when not given)."""
    if not is_user_id(user_id):
        raise ValueError(f"user id must match {USER_PATTERN}")
    now = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": user_id, "iat": now, "nbf": now, "exp": now + (ttl or settings.token_ttl_seconds),
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
    }
    if roles:
        claims["roles"] = list(roles)
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid} if kid else None)


_ASYMMETRIC = ("RS256", "ES256")
# What a 401 says: which check failed, never anything about the key or the claims' content.
UNKNOWN_KEY = "token not signed by a key this server knows"
MALFORMED = "malformed token"
VERIFIED_CACHE_SIZE = 4096  # tokens remembered per process (a few hundred KB at most)
VERIFIED_CACHE_SECONDS = 60.0  # how long a removed key's tokens may still be honoured
LEEWAY = 5  # seconds a token's exp, nbf and iat may be off, for clocks skewed at issue
INVALID_CLAIMS = "invalid token (issuer, audience or claims)"


REFUSED_KIDS_MAX = 4096  # unknown kids remembered per process; the oldest are forgotten first


class JWKSKeys:
    """Signing keys from a JWKS URL, asked for as seldom as verification allows.

    PyJWKClient fetches with its lock held, so a fetch that hangs holds up every RS256/ES256
    check in the process, and while the IdP is down each token naming a kid it has not
    resolved fetches again. Here a fetch gives up after `timeout`; a kid the JWKS did not
    have, and every unresolved kid after a failed fetch, is refused for `refused_for`
    seconds without asking; and tokens wait for another's fetch instead of queueing fetches
    of their own. Kids resolved before stay served from PyJWKClient's key cache meanwhile.
    """

    def __init__(self, url: str, *, timeout: float, refused_for: float) -> None:
        self._client = jwt.PyJWKClient(url, cache_keys=True, timeout=timeout)
        self._refused_for = refused_for
        self._known: set[str] = set()
        self._refused: OrderedDict[str, float] = OrderedDict()  # kid -> refused until
        self._unreachable_until = 0.0
        self._fetching = threading.Lock()

    def get(self, kid: str) -> jwt.PyJWK:
        """The key named `kid`.

        Raises:
            jwt.PyJWKClientError: the JWKS has no such key, or could not be fetched (now or
                less than `refused_for` seconds ago).
        """
        if kid in self._known:  # in PyJWKClient's key cache: no fetch
            return self._client.get_signing_key(kid)
        self._check_refused(kid, time.monotonic())
        with self._fetching:
            now = time.monotonic()
            self._check_refused(kid, now)  # another token's fetch may have just failed
            try:
                key = self._client.get_signing_key(kid)
            except jwt.PyJWKClientConnectionError:
                self._unreachable_until = now + self._refused_for
                self._refuse(kid, now)
                raise
            except jwt.PyJWKClientError:
                self._refuse(kid, now)
                raise
            self._known.add(kid)
            self._refused.pop(kid, None)
            return key

    def _check_refused(self, kid: str, now: float) -> None:
        if now < self._unreachable_until:
            raise jwt.PyJWKClientError("the JWKS URL failed a moment ago")
        until = self._refused.get(kid)
        if until is not None and now < until:
            raise jwt.PyJWKClientError(f"kid {kid!r} was not in the JWKS a moment ago")

    def _refuse(self, kid: str, now: float) -> None:
        self._refused[kid] = now + self._refused_for
        self._refused.move_to_end(kid)
        while len(self._refused) > REFUSED_KIDS_MAX:
            self._refused.popitem(last=False)


class TokenVerifier:
    """Verifies bearer tokens: HS256 by `kid` (rotation) or the default secret, RS256/ES256
    against a JWKS. The algorithm decides the key family, so an HMAC token is never checked
    against a public key (the classic algorithm-confusion attack).

    `clock` (seconds since the epoch) is the one time every expiry, not-before and cache
    decision is made against, so a test can move it instead of waiting for it."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        # By kid; None (no kid in the header) is the default secret, added below.
        self._hmac: dict[str | None, str] = {}
        for kid, key in settings.jwt_keys.items():
            self._hmac[kid] = key
        self._jwks: Any = None
        if settings.jwt_jwks_file is not None:
            self._jwks = jwt.PyJWKSet.from_json(settings.jwt_jwks_file.read_text())
        elif settings.jwt_jwks_url:
            self._jwks = JWKSKeys(settings.jwt_jwks_url, timeout=settings.jwt_jwks_timeout,
                                  refused_for=settings.jwt_jwks_negative_cache_seconds)
        # Verified tokens, so a client's every request does not pay for a signature check and
        # claim parsing again (a sizeable share of a submission). Keyed by the token itself:
        # only the exact bytes that passed verification hit. Entries end at the token's own
        # expiry or after VERIFIED_CACHE_SECONDS, whichever is first, so a key withdrawn
        # from the JWKS stops being honoured within that time.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        try:
            self._hmac[None] = settings.jwt_secret()
        except ConfigurationError:
            if not self._hmac and self._jwks is None:
                raise  # production with no key at all: refuse to start

    def issue(self, user_id: str, ttl: int | None = None, roles: tuple[str, ...] = ()) -> str:
        """A token signed with the active key (rotation) or the default secret."""
        kid = self._settings.jwt_active_kid
        secret = self._hmac[kid] if kid in self._hmac else self._hmac[None]
        return issue_token(self._settings, secret, user_id, ttl, kid=kid, roles=roles,
                           now=self._clock())

    def _key(self, header: dict[str, Any]) -> tuple[Any, str]:
        """The key a token's header names, only from the family its algorithm belongs to.

        Raises:
            Unauthenticated: no such key here, or the algorithm does not fit the key.
        """
        alg, kid = header.get("alg"), header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated(MALFORMED)
        if alg == "HS256":
            secret = self._hmac.get(kid)  # no kid: the default secret
            if secret is None:
                raise Unauthenticated(UNKNOWN_KEY)
            return secret, alg
        if alg in _ASYMMETRIC and self._jwks is not None and kid is not None:
            try:
                if isinstance(self._jwks, JWKSKeys):
                    jwk = self._jwks.get(kid)
                else:
                    jwk = self._jwks[kid]
            except (KeyError, jwt.PyJWKClientError, jwt.PyJWKError):
                raise Unauthenticated(UNKNOWN_KEY) from None
            # An ES256 header naming an RSA key (or the reverse) is not a signature of that
            # key; checking it would hand the library a key of the wrong kind.
            if jwk.algorithm_name != alg:
                raise Unauthenticated(UNKNOWN_KEY)
            return jwk.key, alg
        raise Unauthenticated("unsupported token algorithm")

    def verify(self, token: str) -> Principal:
        """Check signature, expiry, not-before, issuer and audience (or find the token
        among those that passed these checks a moment ago).

        Raises:
            Unauthenticated: any check fails (the reason is not echoed to the client).
        """
        now = self._clock()
        hit = self._verified.get(token)
        if hit is not None:
            if now < hit[1]:
                return hit[0]
            del self._verified[token]
        principal, expires = self._verify(token, now)
        self._verified[token] = (principal, min(expires, now + VERIFIED_CACHE_SECONDS))
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    def _verify(self, token: str, now: float) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated(MALFORMED) from None
        key, alg = self._key(header)
        # The signature is checked before any claim, so "expired" or "not yet valid" is only
        # ever said about a token this server signed. The library compares exp, nbf and iat
        # with its own reading of the time; they are compared with `now` below instead.
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"],
                         "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            raise Unauthenticated(UNKNOWN_KEY) from None
        except (jwt.InvalidTokenError, TypeError, ValueError, OverflowError):
            # TypeError and friends: a key or claim of a shape the library did not expect.
            raise Unauthenticated(INVALID_CLAIMS) from None
        expires = _check_times(claims, now)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not is_user_id(subject):
            raise Unauthenticated("invalid token subject")
        roles = claims.get("roles")
        admin = (self._settings.admin_enabled and isinstance(roles, list) and "admin" in roles)
        # Honoured until `exp` exactly (the leeway is for clocks skewed at issue, not for
        # remembering): a token decoded within its leeway is not cached past `exp`.
        return Principal(user_id=subject, admin=admin), expires


def _seconds(claims: dict[str, Any], name: str) -> int:
    """A time claim as whole seconds, the way PyJWT reads it (any int-like value)."""
    try:
        return int(claims[name])
    except (TypeError, ValueError, OverflowError):
        raise Unauthenticated(INVALID_CLAIMS) from None


def _check_times(claims: dict[str, Any], now: float) -> float:
    """The token's `exp`, once iat, nbf and exp allow it at `now` (with LEEWAY), checked as
    PyJWT checks them (in that order) but against the verifier's clock.

    Raises:
        Unauthenticated: not yet valid, expired, or a time claim that is not a number.
    """
    if _seconds(claims, "iat") > now + LEEWAY:
        raise Unauthenticated("token not yet valid")
    if "nbf" in claims and _seconds(claims, "nbf") > now + LEEWAY:
        raise Unauthenticated("token not yet valid")
    if _seconds(claims, "exp") <= now - LEEWAY:
        raise Unauthenticated("token expired")
    try:
        return float(claims["exp"])  # the cache keeps the exact value, fractions included
    except (TypeError, ValueError, OverflowError):
        raise Unauthenticated(INVALID_CLAIMS) from None

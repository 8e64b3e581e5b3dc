"""TokenVerifier remembers tokens that passed verification; what it remembers must never let
through a token that would fail, nor outlive the token."""
from __future__ import annotations

import time

import jwt
import pytest

from domain.errors import Unauthenticated
from runlane.settings import Settings
from runlane.tokens import (
    LEEWAY,
    VERIFIED_CACHE_SECONDS,
    VERIFIED_CACHE_SIZE,
    TokenVerifier,
    issue_token,
)

SECRET = "s" * 40


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(instance_path=tmp_path, redis_url=None, database_url=None,
                    secret_key=SECRET, signing_key=None, env="development")


def test_a_verified_token_keeps_verifying_to_the_same_principal(settings: Settings) -> None:
    verifier = TokenVerifier(settings)
    token = issue_token(settings, SECRET, "alice")
    assert verifier.verify(token).user_id == "alice"
    assert verifier.verify(token).user_id == "alice"


def test_an_altered_copy_of_a_cached_token_is_refused(settings: Settings) -> None:
    verifier = TokenVerifier(settings)
    token = issue_token(settings, SECRET, "alice")
    verifier.verify(token)
    header, payload, signature = token.split(".")
    forged_claims = jwt.decode(token, options={"verify_signature": False}) | {"sub": "bob"}
    forged = jwt.encode(forged_claims, "w" * 40, algorithm="HS256")  # not the secret
    for bad in (f"{header}.{payload}.{signature[:-2]}AA", forged, token + " "):
        with pytest.raises(Unauthenticated):
            verifier.verify(bad)


class Clock:
    """The verifier's time, moved by the test instead of waited for."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def token_expiring_at(settings: Settings, exp: float) -> str:
    claims = {"sub": "alice", "iat": int(exp) - 60, "nbf": int(exp) - 60, "exp": int(exp),
              "iss": settings.jwt_issuer, "aud": settings.jwt_audience}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_a_cached_token_is_refused_once_it_expired(settings: Settings) -> None:
    clock = Clock()
    verifier = TokenVerifier(settings, clock=clock)
    # Expired 3 s ago: still inside the leeway allowed for skewed clocks.
    token = token_expiring_at(settings, clock.now - 3)
    assert verifier.verify(token).user_id == "alice"
    clock.now += LEEWAY - 3 + 0.5  # now past the leeway
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(token)  # a cache that outlived `exp` would still say alice


def test_a_cached_token_is_honoured_until_its_expiry_and_not_after(settings: Settings) -> None:
    clock = Clock()
    verifier = TokenVerifier(settings, clock=clock)
    token = token_expiring_at(settings, clock.now + 30)
    assert verifier.verify(token).user_id == "alice"
    clock.now += 29.5
    assert verifier.verify(token).user_id == "alice"
    clock.now += 0.5 + LEEWAY  # at `exp` the cache lets go; past the leeway decoding refuses
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(token)


def test_expiry_is_decided_by_the_verifiers_clock_not_the_machines(settings: Settings) -> None:
    """A token good for an hour by the machine's clock, to a verifier whose clock says two
    hours later: PyJWT's own check (real time) would let it through."""
    clock = Clock(time.time() + 7200)
    token = issue_token(settings, SECRET, "alice", ttl=3600)
    with pytest.raises(Unauthenticated, match="expired"):
        TokenVerifier(settings, clock=clock).verify(token)
    # ... and a token issued in the verifier's future is not yet valid to it.
    early = TokenVerifier(settings, clock=Clock(time.time() - 7200))
    with pytest.raises(Unauthenticated, match="not yet valid"):
        early.verify(token)


def test_a_cache_entry_ends_after_the_cache_period_even_for_a_long_lived_token(
        settings: Settings) -> None:
    """Past VERIFIED_CACHE_SECONDS the token is verified again (so a withdrawn key stops being
    honoured): with the key gone, the same token is then refused."""
    clock = Clock()
    verifier = TokenVerifier(settings, clock=clock)
    token = issue_token(settings, SECRET, "alice", ttl=3600, now=clock.now)
    assert verifier.verify(token).user_id == "alice"
    verifier._hmac.clear()  # the key is withdrawn
    clock.now += VERIFIED_CACHE_SECONDS - 1
    assert verifier.verify(token).user_id == "alice"  # still remembered
    clock.now += 2
    with pytest.raises(Unauthenticated):
        verifier.verify(token)


def test_issue_stamps_tokens_with_the_verifiers_clock(settings: Settings) -> None:
    clock = Clock()
    token = TokenVerifier(settings, clock=clock).issue("alice", ttl=60)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["iat"], claims["exp"]) == (int(clock.now), int(clock.now) + 60)


def test_the_cache_stays_bounded(settings: Settings) -> None:
    verifier = TokenVerifier(settings)
    first = issue_token(settings, SECRET, "user-0", ttl=3600)
    verifier.verify(first)
    for n in range(1, VERIFIED_CACHE_SIZE + 10):
        verifier.verify(issue_token(settings, SECRET, f"user-{n}", ttl=3600 + n))
    assert len(verifier._verified) == VERIFIED_CACHE_SIZE  # the bound itself
    assert first not in verifier._verified  # the oldest went first
    assert verifier.verify(first).user_id == "user-0"  # and is simply verified again

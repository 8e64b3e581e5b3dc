"""TokenVerifier remembers tokens that passed verification; what it remembers must never let
through a token that would fail, nor outlive the token."""
from __future__ import annotations

import time

import jwt
import pytest

from runlane.errors import Unauthenticated
from runlane.settings import Settings
from runlane.tokens import VERIFIED_CACHE_SIZE, TokenVerifier, issue_token

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


def test_a_cached_token_is_refused_once_it_expired(settings: Settings) -> None:
    verifier = TokenVerifier(settings)
    now = int(time.time())
    # Expired 3–4 s ago (whole seconds, as the decoder compares them): still inside the 5 s
    # leeway it allows for skewed clocks.
    claims = {"sub": "alice", "iat": now - 60, "nbf": now - 60, "exp": now - 3,
              "iss": settings.jwt_issuer, "aud": settings.jwt_audience}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert verifier.verify(token).user_id == "alice"
    time.sleep(2.2)  # now past the leeway: a cache that outlived `exp` would still say alice
    with pytest.raises(Unauthenticated):
        verifier.verify(token)


def test_the_cache_stays_bounded(settings: Settings) -> None:
    verifier = TokenVerifier(settings)
    first = issue_token(settings, SECRET, "user-0", ttl=3600)
    verifier.verify(first)
    for n in range(1, VERIFIED_CACHE_SIZE + 10):
        verifier.verify(issue_token(settings, SECRET, f"user-{n}", ttl=3600 + n))
    assert len(verifier._verified) == VERIFIED_CACHE_SIZE  # the bound itself
    assert first not in verifier._verified  # the oldest went first
    assert verifier.verify(first).user_id == "user-0"  # and is simply verified again

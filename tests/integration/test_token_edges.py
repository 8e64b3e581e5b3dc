"""Tokens that are malformed in ways a signature check never reaches: a header naming the
wrong key family, odd header types, unparsable numbers. Each is a plain 401 over HTTP and a
4401 close on the socket; and a 401 says which of "not our key" and "expired" it was."""
from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import requests
import websocket
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import TEST_SECRET
from tests.support import EventSocket

NOW = int(time.time())
CLAIMS = {"sub": "erin", "iss": "runlane", "aud": "runlane", "iat": NOW, "nbf": NOW,
          "exp": NOW + 600}
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def raw_token(header: object, claims: object = CLAIMS, signature: bytes = b"sig") -> str:
    """A token with any header at all: no library would write these."""
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()),
                     b64(signature)])


def _jwk(public_key: object, kid: str, alg: str) -> dict:
    data = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(public_key))
    return data | {"kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture
def jwks_server(server_with, tmp_path) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [_jwk(RSA_KEY.public_key(), "rsa1", "RS256"),
                                         _jwk(EC_KEY.public_key(), "ec1", "ES256")]}))
    return server_with(jwt_jwks_file=path)  # type: ignore[no-any-return]


def answer(base: str, token: str) -> requests.Response:
    return requests.get(f"{base}/api/agents/v2/agents", timeout=10,
                        headers={"Authorization": f"Bearer {token}"})


def assert_401(response: requests.Response) -> dict:
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert "Traceback" not in response.text
    return response.json()  # type: ignore[no-any-return]


MISMATCHED = {
    "es256_header_rsa_kid": lambda: jwt.encode(CLAIMS, EC_KEY, algorithm="ES256",
                                               headers={"kid": "rsa1"}),
    "rs256_header_ec_kid": lambda: jwt.encode(CLAIMS, RSA_KEY, algorithm="RS256",
                                              headers={"kid": "ec1"}),
    "es256_header_rsa_kid_any_body": lambda: raw_token({"alg": "ES256", "kid": "rsa1"}),
    "rs256_header_ec_kid_any_body": lambda: raw_token({"alg": "RS256", "kid": "ec1"}),
}
MALFORMED = {
    "header_not_base64": lambda: "%%%." + raw_token({}).split(".", 1)[1],
    "header_a_list": lambda: raw_token(["alg", "HS256"]),
    "header_a_string": lambda: raw_token("HS256"),
    "kid_a_list": lambda: raw_token({"alg": "HS256", "kid": ["k"]}),
    "kid_an_object": lambda: raw_token({"alg": "HS256", "kid": {"k": 1}}),
    "kid_a_number": lambda: raw_token({"alg": "RS256", "kid": 7}),
    "alg_a_list": lambda: raw_token({"alg": ["HS256"]}),
    "alg_none": lambda: raw_token({"alg": "none"}, signature=b""),
    "alg_missing": lambda: raw_token({"typ": "JWT"}),
    "claims_not_json": lambda: b64(b'{"alg":"HS256"}') + "." + b64(b"{nope") + ".c2ln",
}


@pytest.mark.parametrize("kind", sorted(MISMATCHED) + sorted(MALFORMED))
def test_a_malformed_or_mismatched_token_is_a_plain_401(jwks_server, kind):
    token = (MISMATCHED | MALFORMED)[kind]()
    assert_401(answer(jwks_server, token))
    assert_401(answer(jwks_server, token))  # and again: nothing was remembered half-way


@pytest.mark.parametrize("kind", sorted(MISMATCHED))
def test_a_mismatched_token_closes_the_socket_4401(jwks_server, kind):
    url = jwks_server.replace("http://", "ws://") + "/api/agents/v2/ws"
    sock = EventSocket(websocket.create_connection(
        url, header=[f"Authorization: Bearer {MISMATCHED[kind]()}"], timeout=10))
    assert sock.recv_json() is None and sock.close_code == 4401


@pytest.mark.parametrize("claims", [
    CLAIMS | {"exp": 1e400}, CLAIMS | {"exp": "soon"}, CLAIMS | {"iat": 1e400},
    CLAIMS | {"exp": 10**400}, CLAIMS | {"exp": float("nan")},
    CLAIMS | {"nbf": [1]}, CLAIMS | {"sub": 5}, CLAIMS | {"sub": "erin\n"},
])
def test_a_correctly_signed_token_with_unusable_claims_is_a_plain_401(live_server, claims):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())  # json writes 1e400 as Infinity
    signing_input = f"{header}.{payload}".encode()
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        signing_input, TEST_SECRET.encode())
    assert_401(answer(live_server, f"{header}.{payload}.{b64(signature)}"))


def test_a_token_signed_with_another_servers_secret_says_the_key_is_unknown(live_server):
    stranger = jwt.encode(CLAIMS, "another-instance-secret-" + "z" * 40, algorithm="HS256")
    detail = assert_401(answer(live_server, stranger))["detail"]
    assert "not signed by a key this server knows" in detail
    assert "expired" not in detail


def test_an_expired_token_of_this_server_says_it_expired(live_server):
    old = CLAIMS | {"iat": NOW - 3600, "nbf": NOW - 3600, "exp": NOW - 600}
    token = jwt.encode(old, TEST_SECRET, algorithm="HS256")
    detail = assert_401(answer(live_server, token))["detail"]
    assert "expired" in detail and "key" not in detail


def test_an_expired_token_of_another_server_does_not_say_it_expired(live_server):
    """Expiry is only reported once the signature verified: a stranger learns nothing else."""
    old = CLAIMS | {"iat": NOW - 3600, "nbf": NOW - 3600, "exp": NOW - 600}
    stranger = jwt.encode(old, "another-instance-secret-" + "z" * 40, algorithm="HS256")
    detail = assert_401(answer(live_server, stranger))["detail"]
    assert "not signed by a key this server knows" in detail and "expired" not in detail

"""Authentication as configured: key rotation, JWKS (RS256/ES256), production without keys,
the opt-in admin role, per-user rate limits and CORS."""
from __future__ import annotations

import json
import logging
import time

import jwt
import pytest
import requests
import websocket
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from domain.errors import ConfigurationError
from tests.support import EventSocket

NOW = int(time.time())
CLAIMS = {"sub": "carol", "iss": "runlane", "aud": "runlane",
          "iat": NOW, "nbf": NOW, "exp": NOW + 600}
K1, K2 = "rotation-one-" + "a" * 40, "rotation-two-" + "b" * 40


def status(base: str, token: str) -> int:
    return requests.get(f"{base}/api/agents/v2/agents", timeout=5,
                        headers={"Authorization": f"Bearer {token}"}).status_code


def test_rotated_keys_verify_by_kid_and_unknown_kids_are_refused(server_with):
    base = server_with(jwt_keys={"k1": K1, "k2": K2}, jwt_active_kid="k2")
    assert status(base, jwt.encode(CLAIMS, K1, headers={"kid": "k1"})) == 200
    assert status(base, jwt.encode(CLAIMS, K2, headers={"kid": "k2"})) == 200
    assert status(base, jwt.encode(CLAIMS, K1, headers={"kid": "k2"})) == 401  # wrong key for kid
    assert status(base, jwt.encode(CLAIMS, K1, headers={"kid": "k9"})) == 401


def test_cli_issues_tokens_with_the_active_kid(runlane_env):
    from runlane.settings import load
    from runlane.tokens import TokenVerifier

    settings = load({"jwt_keys": {"k1": K1, "k2": K2}, "jwt_active_kid": "k2"})
    token = TokenVerifier(settings).issue("dave")
    assert jwt.get_unverified_header(token)["kid"] == "k2"
    assert TokenVerifier(settings).verify(token).user_id == "dave"


def _jwk(public_key, kid: str, alg: str) -> dict:
    data = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(public_key))
    return data | {"kid": kid, "alg": alg, "use": "sig"}


def test_rs256_and_es256_tokens_verify_against_a_jwks_file(server_with, tmp_path):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [_jwk(rsa_key.public_key(), "rsa1", "RS256"),
                                         _jwk(ec_key.public_key(), "ec1", "ES256")]}))
    base = server_with(jwt_jwks_file=path)
    rsa_token = jwt.encode(CLAIMS, rsa_key, algorithm="RS256", headers={"kid": "rsa1"})
    assert status(base, rsa_token) == 200
    ec_token = jwt.encode(CLAIMS, ec_key, algorithm="ES256", headers={"kid": "ec1"})
    assert status(base, ec_token) == 200
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger_token = jwt.encode(CLAIMS, stranger, algorithm="RS256", headers={"kid": "rsa1"})
    assert status(base, stranger_token) == 401
    # Algorithm confusion: an HS256 token naming the RSA key's kid must not pass.
    hs_with_rsa_kid = jwt.encode(CLAIMS, "x" * 40, algorithm="HS256", headers={"kid": "rsa1"})
    assert status(base, hs_with_rsa_kid) == 401


def test_production_refuses_to_start_without_keys(runlane_env):
    from webapp import create_app

    with pytest.raises(ConfigurationError):
        create_app({"env": "production", "secret_key": None})


def test_admin_role_reads_any_run_only_when_enabled_and_is_logged(server_with, tokens, caplog):
    from runlane.settings import load
    from runlane.tokens import TokenVerifier

    alice = tokens.user("alice")
    run = alice.submit("t", "echo", "private")["run_id"]
    admin_token = TokenVerifier(load()).issue("ops", roles=("admin",))
    plain = requests.get(f"{alice.base_url}/api/agents/v2/{run}/state", timeout=5,
                         headers={"Authorization": f"Bearer {admin_token}"})
    assert plain.status_code == 404  # off by default
    base = server_with(admin_enabled=True)
    with caplog.at_level(logging.WARNING, logger="webapp.runs"):
        allowed = requests.get(f"{base}/api/agents/v2/{run}/state", timeout=5,
                               headers={"Authorization": f"Bearer {admin_token}"})
    assert allowed.status_code == 200 and allowed.json()["run_id"] == run
    assert any("admin ops read run" in r.getMessage() for r in caplog.records)
    bob = tokens.user("bob").on(base)
    assert bob.get(f"/api/agents/v2/{run}/state").status_code == 404  # no role, no access


def test_submissions_over_the_rate_limit_get_429(server_with, tokens):
    alice = tokens.user("alice").on(server_with(submit_rate_per_minute=3))
    answers = [alice.post(f"/api/agents/v2/thread/r{i}/runs", json={"agent": "echo"})
               for i in range(7)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited and all(0 < int(r.headers["Retry-After"]) <= 60 for r in limited)
    assert limited[0].headers["Content-Type"].startswith("application/problem+json")
    assert tokens.user("bob").on(alice.base_url).post(
        "/api/agents/v2/thread/x/runs", json={"agent": "echo"}).status_code == 202


def test_over_the_rate_limit_nothing_is_written_and_429_comes_first(server_with, tokens):
    # The count is read after the body is checked (it arrives meanwhile), but what a client
    # sees is as if it were read first: 429 whatever else is wrong, and no run written.
    carol = tokens.user("carol").on(server_with(submit_rate_per_minute=2))
    for i in range(2):
        assert carol.post(f"/api/agents/v2/thread/ok{i}/runs",
                          json={"agent": "echo"}).status_code == 202
    over = [
        carol.post("/api/agents/v2/thread/late/runs", json={"agent": "echo"}),
        carol.post("/api/agents/v2/thread/late/runs", json={"agent": "no-such-agent"}),
        requests.post(carol.base_url + "/api/agents/v2/thread/late/runs", data="{not json",
                      headers={**carol.headers, "Content-Type": "application/json"}, timeout=10),
        carol.post("/api/agents/run_agent", json={"query": "hi"}),
    ]
    assert [r.status_code for r in over] == [429, 429, 429, 429]
    assert all(r.headers["Content-Type"].startswith("application/problem+json") for r in over)
    runs = carol.get("/api/agents/v2/runs").json()["items"]
    assert sorted(run["thread_id"] for run in runs) == ["ok0", "ok1"]


def test_socket_connections_over_the_rate_limit_are_closed_4429(server_with, tokens):
    base = server_with(socket_connects_per_minute=2)
    alice = tokens.user("alice").on(base)
    codes = []
    for _ in range(5):
        sock = EventSocket(websocket.create_connection(
            base.replace("http://", "ws://") + "/api/agents/v2/ws",
            header=[f"Authorization: Bearer {alice.token}"], timeout=10))
        frame = sock.recv_json()
        codes.append("ready" if frame else sock.close_code)
        sock.close()
    assert 4429 in codes and "ready" in codes


def test_cors_is_off_by_default_and_follows_the_allow_list(server_with, live_server):
    def preflight(base: str, origin: str) -> requests.Response:
        return requests.options(f"{base}/api/agents/v2/agents", timeout=5, headers={
            "Origin": origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})

    assert "Access-Control-Allow-Origin" not in preflight(live_server, "https://app.example").headers
    base = server_with(cors_origins=["https://app.example"])
    assert preflight(base, "https://app.example").headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Access-Control-Allow-Origin" not in preflight(base, "https://evil.example").headers


def test_es256_tokens_verify_against_a_jwks_url(server_with):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    key = ec.generate_private_key(ec.SECP256R1())
    body = json.dumps({"keys": [_jwk(key.public_key(), "url1", "ES256")]}).encode()

    class JWKS(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), JWKS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = server_with(jwt_jwks_url=f"http://127.0.0.1:{server.server_port}/jwks.json")
        good = jwt.encode(CLAIMS, key, algorithm="ES256", headers={"kid": "url1"})
        assert status(base, good) == 200
        other = ec.generate_private_key(ec.SECP256R1())
        forged = jwt.encode(CLAIMS, other, algorithm="ES256", headers={"kid": "url1"})
        assert status(base, forged) == 401
    finally:
        server.shutdown()


class _JWKSServer:
    """A JWKS endpoint on loopback that counts its requests and can be made to hang (an IdP
    that accepts connections and never answers) until released."""

    def __init__(self, body: bytes) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests = 0
        self.hanging = threading.Event()
        self.released = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if outer.hanging.is_set():
                    outer.released.wait(60)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def _timed_status(base: str, token: str) -> tuple[int, float]:
    started = time.monotonic()
    code = requests.get(f"{base}/api/agents/v2/agents", timeout=15,
                        headers={"Authorization": f"Bearer {token}"}).status_code
    return code, time.monotonic() - started


def test_a_hanging_jwks_url_costs_one_short_fetch_then_unknown_kids_are_refused_at_once(
    server_with,
):
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = _JWKSServer(json.dumps({"keys": [_jwk(key.public_key(), "url1", "ES256")]}).encode())
    jwks.hanging.set()  # the IdP is down from the start
    try:
        base = server_with(jwt_jwks_url=jwks.url)
        code, took = _timed_status(base, jwt.encode(CLAIMS, key, algorithm="ES256",
                                                    headers={"kid": "url1"}))
        assert code == 401 and took < 5  # the fetch gave up after its short timeout
        assert jwks.requests == 1
        for kid in ("url1", "other", "third"):  # neither a failed kid nor a new one fetches
            token = jwt.encode(CLAIMS | {"sub": f"s-{kid}"}, key, algorithm="ES256",
                               headers={"kid": kid})
            code, took = _timed_status(base, token)
            assert code == 401 and took < 1
        assert jwks.requests == 1
    finally:
        jwks.close()


def test_a_known_kid_keeps_verifying_while_the_jwks_url_hangs(server_with):
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = _JWKSServer(json.dumps({"keys": [_jwk(key.public_key(), "url1", "ES256")]}).encode())
    try:
        base = server_with(jwt_jwks_url=jwks.url)
        good = jwt.encode(CLAIMS, key, algorithm="ES256", headers={"kid": "url1"})
        assert status(base, good) == 200
        fetched = jwks.requests
        jwks.hanging.set()
        code, took = _timed_status(base, jwt.encode(CLAIMS | {"sub": "nobody"}, key,
                                                    algorithm="ES256", headers={"kid": "gone"}))
        assert code == 401 and took < 5
        # Another token (not one remembered as verified) signed by the known key.
        code, took = _timed_status(base, jwt.encode(CLAIMS | {"sub": "dora"}, key,
                                                    algorithm="ES256", headers={"kid": "url1"}))
        assert code == 200 and took < 1
        assert jwks.requests <= fetched + 1
    finally:
        jwks.close()

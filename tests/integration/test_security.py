"""Doors that must stay shut: token checks over HTTP and the socket, forged task messages,
deeply nested input."""
from __future__ import annotations

import base64
import json
import time
from datetime import datetime

import jwt
import pytest
import requests
import websocket
from itsdangerous import URLSafeSerializer

from tests.conftest import TEST_SECRET
from tests.support import EventSocket

NOW = int(time.time())
GOOD = {"sub": "alice", "iss": "runlane", "aud": "runlane",
        "iat": NOW, "nbf": NOW, "exp": NOW + 600}


def forge(claims: dict, key: str = TEST_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def unsigned(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


BAD_TOKENS = {
    "expired": lambda: forge(GOOD | {"exp": NOW - 60, "iat": NOW - 120, "nbf": NOW - 120}),
    "not_yet_valid": lambda: forge(GOOD | {"nbf": NOW + 600}),
    "wrong_audience": lambda: forge(GOOD | {"aud": "someone-else"}),
    "wrong_issuer": lambda: forge(GOOD | {"iss": "evil"}),
    "alg_none": lambda: unsigned(GOOD),
    "wrong_key": lambda: forge(GOOD, key="another-secret-" + "q" * 40),
    "no_subject": lambda: forge({k: v for k, v in GOOD.items() if k != "sub"}),
    "bad_subject": lambda: forge(GOOD | {"sub": "../admin"}),
    "garbage": lambda: "not.a.token",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused_over_http(live_server, kind):
    response = requests.get(f"{live_server}/api/agents/v2/agents", timeout=5,
                            headers={"Authorization": f"Bearer {BAD_TOKENS[kind]()}"})
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
@pytest.mark.parametrize("how", ["header", "first_message"])
def test_bad_tokens_are_refused_over_the_socket(live_server, kind, how):
    url = live_server.replace("http://", "ws://") + "/api/agents/v2/ws"
    token = BAD_TOKENS[kind]()
    header = [f"Authorization: Bearer {token}"] if how == "header" else []
    sock = EventSocket(websocket.create_connection(url, header=header, timeout=10))
    if how == "first_message":
        sock.send_json({"type": "auth", "token": token})
    assert sock.recv_json() is None and sock.close_code == 4401


def test_a_valid_token_passes_both_doors(live_server):
    token = forge(GOOD)
    assert requests.get(f"{live_server}/api/agents/v2/agents", timeout=5,
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200
    url = live_server.replace("http://", "ws://") + "/api/agents/v2/ws"
    sock = EventSocket(websocket.create_connection(url, timeout=10))
    sock.send_json({"type": "auth", "token": token})
    assert sock.recv_json()["user_id"] == "alice"
    sock.close()


def test_forged_task_message_sent_to_the_broker_is_refused_by_the_worker(users):
    """Valid shape, altered user id, original signature: never executed, the run fails."""
    import tasks
    from domain.context import UserExecutionContext
    from factories.context import sign_context
    from runlane.settings import load

    alice, mallory = users.user("alice"), users.user("mallory")
    blocker = alice.submit("t", "demo", {"steps": 2, "delay_ms": 400})["run_id"]
    victim = alice.submit("t", "echo", "secret")["run_id"]  # waits behind the blocker
    watcher = mallory.socket()
    watcher.recv_json()
    state = alice.get(f"/api/agents/v2/{victim}/state").json()
    created_at = datetime.fromisoformat(state["created_at"].replace("Z", "+00:00"))
    honest = UserExecutionContext(
        user_id=alice.user_id, thread_id="t", run_id=victim, request_id="x", agent="echo",
        input="secret", created_at=created_at)
    signed = sign_context(honest, load().context_signing_key())
    serializer = URLSafeSerializer(b"unused", salt="runlane.context.v1")
    _valid, data = serializer.loads_unsafe(signed)
    data["user_id"] = mallory.user_id  # altered; the original signature no longer matches
    signature = signed.rsplit(".", 1)[1]
    forged = f"{serializer.dump_payload(data).decode()}.{signature}"
    tasks.app.send_task("runlane.execute_run", args=[forged, 1], queue="runlane")
    final = alice.wait_for_state(victim, {"failed", "completed"}, timeout=20)
    assert final["status"] == "failed" and "refused" in final["error"]
    events = alice.get(f"/api/agents/v2/{victim}/events").json()["items"]
    assert [e["type"] for e in events] == ["agent_failed"]  # never started
    own = mallory.submit("m", "echo", "mine")["run_id"]
    seen = watcher.events_until_done({own})  # Mallory's socket: her own run, nothing else
    watcher.close()
    assert {e["run_id"] for e in seen} == {own}
    alice.wait_for_state(blocker, {"completed"})


def test_deeply_nested_json_is_400_not_a_crash(tokens):
    for depth in (100, 50_000):
        body = '{"agent": "echo", "input": ' + "[" * depth + "]" * depth + "}"
        response = tokens.user().post("/api/agents/v2/thread/t/runs", data=body)
        assert response.status_code == 400
        assert response.headers["Content-Type"].startswith("application/problem+json")
    assert "nested" in tokens.user().post("/api/agents/v2/thread/t/runs", data=(
        '{"agent": "echo", "input": ' + "[" * 100 + "]" * 100 + "}")).json()["detail"]
    modest = '{"agent": "echo", "input": ' + "[" * 20 + "]" * 20 + "}"
    assert tokens.user().post("/api/agents/v2/thread/t/runs", data=modest).status_code == 202

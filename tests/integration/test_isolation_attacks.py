"""Adversarial isolation: many users submit concurrently, then each attacks every route and
socket message with the others' run and thread ids and with guessed ids. Nothing foreign may
appear in any answer or frame; foreign ids answer exactly like missing ones."""
from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.e2e.conftest import postgres_database
from tests.processes import Stack

PREFIXES = ("/api/agents", "/api/agent")
RUN_ROUTES = ("GET {p}/v2/{id}/state", "GET {p}/v2/{id}/events", "POST {p}/v2/{id}/cancel",
              "GET {p}/{id}/status", "GET {p}/{id}/state")
THREAD_ROUTES = ("GET {p}/v2/thread/{id}/runs", "GET {p}/thread/{id}/runs")


def scenario(users: list) -> None:  # type: ignore[type-arg]
    secrets = {u.user_id: f"secret-of-{u.user_id}" for u in users}
    sockets = {u.user_id: u.socket() for u in users}
    for sock in sockets.values():
        assert sock.recv_json()["type"] == "ready"

    def submit(user):  # type: ignore[no-untyped-def]
        return [user.submit("shared", "echo", secrets[user.user_id])["run_id"],
                user.submit(f"own-{user.user_id}", "demo",
                            {"steps": 2, "text": secrets[user.user_id]})["run_id"]]

    with ThreadPoolExecutor(8) as pool:
        runs = dict(zip([u.user_id for u in users], pool.map(submit, users)))
    frames: dict[str, list[dict]] = {}
    for user in users:
        frames[user.user_id] = sockets[user.user_id].events_until_done(set(runs[user.user_id]), 60)

    def probe(user):  # type: ignore[no-untyped-def]
        problems = []
        others = [u for u in users if u is not user]
        foreign_runs = [r for o in others for r in runs[o.user_id]]
        foreign_threads = [f"own-{o.user_id}" for o in others]
        forbidden = [o.user_id for o in others] + foreign_runs + [secrets[o.user_id] for o in others]
        targets = [(route, rid, 404) for route in RUN_ROUTES for rid in foreign_runs[:6]]
        targets += [(route, uuid.uuid4().hex, 404) for route in RUN_ROUTES]
        targets += [(route, "x" * 65, 400) for route in RUN_ROUTES]
        targets += [(route, tid, 404) for route in THREAD_ROUTES for tid in foreign_threads[:6]]
        for template, target, expected in targets:
            for prefix in PREFIXES:
                method, path = template.format(p=prefix, id=target).split(" ", 1)
                answer = requests.request(method, user.base_url + path, headers=user.headers,
                                          timeout=30)
                leaked = [f for f in forbidden if f not in target and f in answer.text]  # echoes of own input are fine
                if answer.status_code != expected or leaked:
                    problems.append((user.user_id, method, path, answer.status_code))
        for prefix in PREFIXES:  # the thread named alike by everyone lists only one's own runs
            for path in (f"{prefix}/v2/thread/shared/runs", f"{prefix}/thread/shared/runs"):
                answer = requests.get(user.base_url + path, headers=user.headers, timeout=30)
                if answer.status_code != 200 or any(f in answer.text for f in forbidden):
                    problems.append((user.user_id, "GET", path, answer.status_code))
        sock = sockets[user.user_id]
        for message in ({"type": "subscribe", "run_id": foreign_runs[0], "after_seq": 0},
                        {"type": "subscribe", "thread_id": foreign_threads[0], "after_seq": 0}):
            sock.send_json(message)
            answer = sock.recv_json()
            if answer.get("code") != "not_found":
                problems.append((user.user_id, "socket", json.dumps(message), answer))
        sock.send_json({"type": "resume", "cursor": 0})
        sock.send_json({"type": "ping"})
        while (frame := sock.recv_json()) is not None and frame.get("type") != "pong":
            frames[user.user_id].append(frame)
        for frame in frames[user.user_id]:
            if any(f in json.dumps(frame) for f in forbidden):
                problems.append((user.user_id, "frame", frame.get("type"), frame.get("run_id")))
        return problems

    with ThreadPoolExecutor(8) as pool:
        problems = [p for found in pool.map(probe, users) for p in found]
    for sock in sockets.values():
        sock.close()
    assert not problems, problems[:20]
    # Each user's resume replayed exactly its own runs' events.
    for user in users:
        assert {f["run_id"] for f in frames[user.user_id] if "seq" in f} == set(runs[user.user_id])


def test_twenty_users_see_nothing_of_each_other_sqlite(users):
    scenario([users.user(f"u{i}") for i in range(20)])


def test_a_foreign_run_answers_404_in_the_same_time_as_a_missing_one(users):
    """No timing oracle for other users' ids: both are one owner-filtered indexed lookup."""
    import statistics
    import time

    alice, bob = users.user("alice"), users.user("bob")
    foreign = alice.submit("t", "echo", "x")["run_id"]

    def median_ms(run_id: str) -> float:
        samples = []
        for _ in range(30):
            start = time.perf_counter()
            assert bob.get(f"/api/agents/v2/{run_id}/state").status_code == 404
            samples.append((time.perf_counter() - start) * 1000)
        return statistics.median(samples)

    a, b = median_ms(foreign), median_ms(uuid.uuid4().hex)
    assert max(a, b) / min(a, b) < 10, (a, b)  # same order of magnitude


def test_isolation_holds_on_postgresql(tmp_path, tokens):
    databases = postgres_database()
    url = next(databases)
    if url is None:
        pytest.skip("no PostgreSQL reachable")
    from storage.db import migrate

    migrate(url)
    stack = Stack(tmp_path, {"DATABASE_URL": url})
    try:
        stack.worker("w1", concurrency=2)
        base = stack.web()
        scenario([tokens.user(f"p{i}").on(base) for i in range(6)])
    finally:
        stack.close()
        next(databases, None)

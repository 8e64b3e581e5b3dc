"""Metrics and logs as production runs them: gunicorn with two web workers and a prefork Celery
worker, separate processes sharing one PROMETHEUS_MULTIPROC_DIR, logging JSON lines."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from runlane.settings import load
from tests.integration.test_metrics import scrape, value
from tests.processes import Stack, free_port
from tests.support import User, wait_until

CANARY = "input-canary-" + uuid.uuid4().hex  # an agent input that must never reach a log


@dataclass
class Fleet:
    stack: Stack
    web: str
    worker_metrics: str
    user: User
    run_id: str
    request_id: str


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    from runlane.tokens import issue_token

    workdir = tmp_path_factory.mktemp("fleet")
    (workdir / "metrics").mkdir()
    port = free_port()
    stack = Stack(workdir, {"PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
                            "RUNLANE_WORKER_METRICS_PORT": str(port),
                            "RUNLANE_LOG_FORMAT": "json", "RUNLANE_WEB_WORKERS": "2"})
    try:
        web = stack.web()
        stack.worker("worker", concurrency=1)
        settings = load()
        user_id = f"dana-{uuid.uuid4().hex[:8]}"
        user = User(user_id, issue_token(settings, settings.jwt_secret(), user_id), web)
        socket = user.socket()
        assert socket.recv_json()["type"] == "ready"
        request_id = f"req-{uuid.uuid4().hex[:12]}"
        submitted = requests.post(f"{web}/api/agents/v2/thread/t1/runs", timeout=10,
                                  headers={**user.headers, "X-Request-ID": request_id},
                                  json={"agent": "echo", "input": {"text": CANARY}})
        assert submitted.status_code == 202, submitted.text
        run_id = submitted.json()["run_id"]
        events = socket.events_until_done({run_id}, timeout=60)
        assert events[-1]["type"] == "agent_completed"
        socket.close()
        yield Fleet(stack, web, f"http://127.0.0.1:{port}", user, run_id, request_id)
    finally:
        stack.close()


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a process's output (Celery prints its banner as plain text)."""
    found = []
    for line in text.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            found.append(parsed)
    return found


def test_the_web_scrape_adds_up_the_samples_of_the_worker_processes(fleet: Fleet):
    # The worker's child records the run's duration (its last sample) just after publishing
    # the terminal event, which the fixture already received: wait for it, then check all.
    def duration_recorded() -> Any:
        samples = scrape(fleet.web)
        return samples if value(samples, "runlane_run_duration_seconds_count", agent="echo",
                                status="completed") else None

    samples = wait_until(duration_recorded, 10, "the worker's child recorded the run's duration")
    # queued is counted by the web process; running and completed by the worker's child.
    for status in ("queued", "running", "completed"):
        assert value(samples, "runlane_runs_total", status=status, agent="echo") == 1, status
    assert value(samples, "runlane_factory_build_seconds_count", factory="agent") == 1
    assert value(samples, "runlane_run_duration_seconds_count",
                 agent="echo", status="completed") == 1
    assert value(samples, "runlane_events_published_total", type="agent_completed") == 1
    assert value(samples, "runlane_events_delivered_total", type="agent_completed") == 1


def test_every_web_worker_answers_for_the_sockets_of_the_others(fleet: Fleet):
    # Whichever gunicorn worker serves a scrape, the gauge sums the sockets of both.
    sockets = [fleet.user.socket() for _ in range(4)]
    try:
        for s in sockets:
            assert s.recv_json()["type"] == "ready"
        # Each process refreshes its gauges every 5 s.
        wait_until(lambda: {value(scrape(fleet.web), "runlane_connected_sockets")
                            for _ in range(6)} == {4.0},
                   30, "every scrape counts the 4 sockets", interval=0.5)
    finally:
        for s in sockets:
            s.close()


def test_a_worker_serves_its_own_metrics_on_its_port(fleet: Fleet):
    samples = scrape(fleet.worker_metrics)
    assert value(samples, "runlane_runs_total", status="completed", agent="echo") == 1
    assert value(samples, "runlane_run_queue_wait_seconds_count", agent="echo") == 1


def test_web_and_worker_lines_are_json_with_the_runs_ids_and_no_token_or_input(fleet: Fleet):
    web_log, worker_log = fleet.stack.log("web"), fleet.stack.log("worker")
    ids = {"run_id": fleet.run_id, "user_id": fleet.user.user_id, "request_id": fleet.request_id}

    access = [line for line in json_lines(web_log) if line["logger"] == "runlane.access"
              and line["message"].startswith("POST /api/agents/v2/thread/t1/runs 202")]
    assert len(access) == 1
    assert {k: access[0].get(k) for k in ids} == ids
    assert all(line.startswith("{") for line in web_log.splitlines() if line.strip())

    mine = [line for line in json_lines(worker_log) if line.get("run_id") == fleet.run_id]
    assert {line["message"].split(":")[0].split(" after")[0] for line in mine} >= {
        "run started", "run ended completed"}
    assert all({k: line.get(k) for k in ids} == ids for line in mine)
    # Every worker line about the run carries its ids: Celery's own per-task lines (the task id
    # is the run's id) are left to DEBUG, since they could not.
    about = [line for line in json_lines(worker_log) if fleet.run_id in json.dumps(line)]
    assert about == mine

    for text in (web_log, worker_log):
        assert fleet.user.token not in text
        assert CANARY not in text

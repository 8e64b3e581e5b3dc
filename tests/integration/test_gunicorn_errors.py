"""Requests gunicorn itself refuses before the app sees them (a URI too long, a garbled request
line, a header too large) still get a problem+json answer, from the real gunicorn + gevent
server `runlane up` runs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runlane.cli import _web_argv
from tests.processes import free_port
from tests.support import wait_until


@pytest.fixture(scope="module")
def gunicorn(
    tmp_path_factory: pytest.TempPathFactory, runlane_env: dict[str, str]
) -> Iterator[int]:
    """gunicorn started exactly as `runlane web` and `runlane up` start it."""
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "web.log"
    argv = _web_argv("127.0.0.1", port)
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=dict(os.environ), stdout=out,
                                   stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    def healthy() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
        except OSError:  # not listening yet
            return False

    try:
        wait_until(healthy, 60, "gunicorn answers /healthz", interval=0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes or the body is complete."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        data = b""
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (line.partition(":") for line in lines[1:])}
                if len(body) >= int(headers.get("content-length", "-1")) >= 0:
                    return int(lines[0].split()[1]), headers, body
            chunk = conn.recv(65536)
            if not chunk:
                raise OSError(f"connection closed after {data!r}")
            data += chunk


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
    (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
])
def test_gunicorns_own_refusals_are_problem_json(gunicorn, raw, status):
    got, headers, body = exchange(gunicorn, raw)
    assert got == status, body
    assert headers["content-type"] == "application/problem+json", headers
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"] == "about:blank"
    assert problem["title"] and "<" not in problem.get("detail", "")


@pytest.mark.timeout(120)
def test_the_app_still_answers_through_the_worker(gunicorn):
    status, headers, _body = exchange(gunicorn, b"GET /api/agents/v2/agents HTTP/1.1\r\n"
                                                b"Host: x\r\nConnection: close\r\n\r\n")
    assert status == 401 and headers["content-type"].startswith("application/problem+json")

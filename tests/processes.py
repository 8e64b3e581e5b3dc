"""Starting and stopping real Runlane processes from tests (gunicorn web, Celery worker)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runlane_script() -> str:
    """The console script pip installed next to this interpreter (what the README runs)."""
    return str(Path(sys.executable).parent / "runlane")


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def web_process(env: Mapping[str, str], log: Path) -> Iterator[str]:
    """`runlane web` (gunicorn + gevent) on a free port; yields its base URL once ready."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([runlane_script(), "web", "--port", str(port)],
                                   env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"web did not start:\n{log.read_text()}")
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield url
    finally:
        stop(process)


@contextmanager
def worker_process(env: Mapping[str, str], log: Path, concurrency: int = 2) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A tasks worker` (prefork), as production runs it."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork",
             "-c", str(concurrency), "--loglevel", "INFO", "-n", f"test-{os.getpid()}@%h",
             "--without-mingle", "--without-gossip"],
            env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process)

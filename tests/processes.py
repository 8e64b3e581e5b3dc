"""Starting and stopping real Runlane processes from tests (gunicorn web, Celery worker)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runlane_script() -> str:
    """The console script pip installed next to this interpreter (what the README runs)."""
    return str(Path(sys.executable).parent / "runlane")


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and everything in its process group (no cleanup runs)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


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
            except requests.RequestException:  # refused, or slow to answer while booting
                time.sleep(0.1)
        yield url
    finally:
        stop(process)


@contextmanager
def worker_process(
    env: Mapping[str, str], log: Path, concurrency: int = 2, name: str = "test",
    queues: str = "runlane",
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A tasks worker` (prefork), as production runs it, in its own process group
    so a test can kill it and its pool children at once, like a lost machine."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork",
             "-c", str(concurrency), "-Q", queues, "--loglevel", "INFO",
             "-n", f"{name}-{os.getpid()}@%h",
             "--without-mingle", "--without-gossip"],
            env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process)


class Stack:
    """An isolated deployment for one test: its own Redis, database, web and workers."""

    def __init__(self, workdir: Path, extra_env: Mapping[str, str] | None = None) -> None:
        from runlane.embedded import EmbeddedRedis  # noqa: PLC0415
        from storage.db import migrate  # noqa: PLC0415

        self.workdir = workdir
        self.redis = EmbeddedRedis(workdir / "redis", port=free_port())
        self.redis.start()
        database_url = f"sqlite:///{workdir / 'stack.db'}"
        migrate(database_url)
        self.env = {**os.environ, "REDIS_URL": self.redis.url, "DATABASE_URL": database_url,
                    "RUNLANE_HEARTBEAT_INTERVAL": "0.5", "RUNLANE_CANCEL_GRACE": "1",
                    "RUNLANE_RESEND_AFTER": "1", **(extra_env or {})}
        self._exits = ExitStack()

    def web(self) -> str:
        return self._exits.enter_context(web_process(self.env, self.workdir / "web.log"))

    def worker(self, name: str, concurrency: int = 1, queues: str = "runlane") -> subprocess.Popen[bytes]:
        return self._exits.enter_context(
            worker_process(self.env, self.workdir / f"{name}.log", concurrency, name, queues))

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()

    def close(self) -> None:
        self._exits.close()
        self.redis.stop()

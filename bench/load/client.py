"""One load-test client process: holds the sockets of a slice of the users, submits their runs
on an open-loop schedule and records every frame each socket receives, stamped on arrival.

Submission and arrival are stamped with this process's own `perf_counter`, so latencies never
compare two machines' (or processes') clocks.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import selectors
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import FrameReader, raise_fd_limit, read_ready, ws_connect

LANES = 8  # parallel submitters per process; each sends its share of the schedule
IDLE_RECONNECT = 3.0  # seconds; gunicorn closes kept-alive connections idle for 5


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client-to-server frame (clients must mask), for the pong answering a ping."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body  # pings are < 126 bytes


class Sockets:
    """The users' sockets and one reader thread that stamps every text frame on arrival."""

    def __init__(self, port: int, tokens: dict[str, str]) -> None:
        self._selector = selectors.DefaultSelector()
        self._users: dict[socket.socket, tuple[str, FrameReader]] = {}
        self.frames: dict[str, list[tuple[float, dict[str, Any]]]] = {u: [] for u in tokens}
        for user, token in tokens.items():
            sock, pending = ws_connect(port, "/api/agents/v2/ws", token)
            reader = FrameReader(pending)
            read_ready(sock, reader)
            sock.setblocking(False)
            self._users[sock] = (user, reader)
            self._selector.register(sock, selectors.EVENT_READ)
            for opcode, payload in reader.feed(b""):  # frames that came with `ready`
                if opcode == 1:
                    self.frames[user].append((time.perf_counter(), json.loads(payload)))
        self.closed: dict[str, str] = {}  # user -> how its socket ended early
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                sock = key.fileobj
                user, reader = self._users[sock]  # type: ignore[index]
                try:
                    data = sock.recv(262144)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                now = time.perf_counter()
                if not data:
                    self.closed.setdefault(user, "connection ended")
                    self._selector.unregister(sock)
                    continue
                for opcode, payload in reader.feed(data):
                    if opcode == 1:
                        self.frames[user].append((now, json.loads(payload)))
                    elif opcode == 9:  # the server's keep-alive ping: unanswered, it closes us
                        try:
                            sock.send(masked_frame(10, payload))  # type: ignore[union-attr]
                        except OSError:
                            pass
                    elif opcode == 8:
                        self.closed[user] = f"close frame {payload[:2].hex()}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self._users:
            sock.close()


def submit_lane(port: int, schedule: list[tuple[float, str, int]], tokens: dict[str, str],
                agent: str, agent_input: Any, out: list[dict[str, Any]]) -> None:
    """Send this lane's submissions at their due times (never earlier; late when behind)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    last_used = time.perf_counter()
    for due, user, step in schedule:
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        if time.perf_counter() - last_used > IDLE_RECONNECT:  # the server closes idle ones
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        sent = time.perf_counter()
        body = json.dumps({"agent": agent, "input": agent_input})
        headers = {"Authorization": f"Bearer {tokens[user]}", "Content-Type": "application/json"}
        for retry in (False, True):
            try:
                conn.request("POST", "/api/agents/v2/thread/load/runs", body, headers)
                response = conn.getresponse()
                answer = response.read()
                status = response.status
                break
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected) as exc:
                # A kept-alive connection the server had closed: the request was not read.
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                answer, status = str(exc).encode(), 0
                if retry:
                    break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                answer, status = str(exc).encode(), 0
                break
        last_used = time.perf_counter()
        record = {"user": user, "step": step, "sent": sent, "late_ms": (sent - due) * 1000,
                  "accepted": time.perf_counter(), "status": status}
        if status == 202:
            record["run_id"] = json.loads(answer)["run_id"]
        else:
            record["error"] = answer[:200].decode(errors="replace")
        out.append(record)
    conn.close()


def client_main(url: str, tokens: dict[str, str], steps: list[dict[str, Any]], slice_share: float,
                agent: str, agent_input: Any, seed: int, ready: Any, go: Any,
                out_path: str) -> None:
    """Connect, report ready, wait for the common start, run every step, write the record."""
    raise_fd_limit()
    port = urlsplit(url).port or 80
    sockets = Sockets(port, tokens)
    sockets.start()
    ready.put(len(tokens))
    start_at = go.get()  # seconds from now until the first step (same for every client)
    t0 = time.perf_counter() + start_at
    rng = random.Random(seed)
    users = sorted(tokens)
    lanes: list[list[tuple[float, str, int]]] = [[] for _ in range(LANES)]
    k = 0
    for index, step in enumerate(steps):
        rate = step["rate"] * slice_share
        count = int(rate * step["seconds"])
        for n in range(count):
            due = t0 + step["start"] + n / rate if rate else 0.0
            lanes[k % LANES].append((due, rng.choice(users), index))
            k += 1
    submissions: list[list[dict[str, Any]]] = [[] for _ in range(LANES)]
    threads = [threading.Thread(target=submit_lane,
                                args=(port, lanes[i], tokens, agent, agent_input, submissions[i]))
               for i in range(LANES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    end = t0 + steps[-1]["start"] + steps[-1]["seconds"] + steps[-1]["drain"]
    while time.perf_counter() < end:
        time.sleep(0.2)
    sockets.close()
    Path(out_path).write_text(json.dumps({
        "submissions": [s for lane in submissions for s in lane],
        "frames": sockets.frames, "closed": sockets.closed,
    }))

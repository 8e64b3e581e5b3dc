"""Idle authenticated sockets held by one Runlane web process, and memory per socket, next to
a bare flask-sock echo app under the same gunicorn/gevent settings, measured in the same run.

    python bench/sockets_memory.py [--sockets 10000] [--clients 4]

Each Runlane socket is a distinct user, so the router holds one Redis subscription per user,
all on the process's single pub/sub connection. Writes bench/results/sockets_memory.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    Deployment,
    FrameReader,
    children,
    free_port,
    raise_fd_limit,
    read_ready,
    rss_kb,
    wait_http,
    ws_connect,
)


def client_main(port: int, path: str, start: int, count: int, runlane: bool, users: int) -> None:
    """A client process: open `count` sockets, say READY, hold them until stdin closes."""
    raise_fd_limit()
    held = []
    token = None
    for n in range(start, start + count):
        if runlane:
            from runlane.settings import load
            from runlane.tokens import issue_token

            token = issue_token(load(), load().jwt_secret(), f"bench{n % users if users else n}")
        s, pending = ws_connect(port, path, token)
        if runlane:
            assert read_ready(s, FrameReader(pending))["type"] == "ready"
        held.append(s)
    print(f"READY {len(held)}", flush=True)
    sys.stdin.read()


def hold(port: int, path: str, total: int, clients: int, runlane: bool, start: int = 0,
         users: int = 0) -> list[subprocess.Popen[str]]:
    procs, per = [], total // clients
    for c in range(clients):
        count = per if c < clients - 1 else total - per * (clients - 1)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--client", str(port), path, str(start + c * per),
             str(count), "1" if runlane else "0", str(users)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for p in procs:
        line = p.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("READY"):
            raise RuntimeError(f"client failed: {line!r}")
    return procs


def release(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.stdin.close()  # type: ignore[union-attr]
        p.wait(60)


def measure(pid: int, port: int, path: str, total: int, clients: int, runlane: bool,
            users: int = 0) -> dict:
    # Imports and pools paid before the baseline.
    warm = hold(port, path, 20, 1, runlane, start=10**6)
    time.sleep(1)
    before = rss_kb(pid)
    started = time.monotonic()
    procs = hold(port, path, total, clients, runlane, users=users)
    opened = time.monotonic() - started
    time.sleep(2)
    after = rss_kb(pid)
    result = {"sockets": total, "rss_before_kb": before, "rss_after_kb": after,
              "kb_per_socket": round((after - before) / total, 2), "open_seconds": round(opened, 1)}
    release(procs + warm)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--users", type=int, default=0,
                        help="distinct users the sockets belong to (0: one user per socket)")
    args = parser.parse_args()
    raise_fd_limit()

    dep = Deployment()
    try:
        import redis

        runlane = measure(dep.worker_pid(), dep.port, "/api/agents/v2/ws", args.sockets,
                          args.clients, runlane=True, users=args.users)
        runlane["users"] = args.users or args.sockets
        # Measured while the sockets were held? No: count subscriptions in a second pass.
        procs = hold(dep.port, "/api/agents/v2/ws", 200, 1, True, start=5 * 10**6)
        clients = redis.Redis.from_url(dep.redis.url).client_list()
        runlane["pubsub_connections"] = sum(1 for c in clients if int(c.get("sub", 0)) > 0)
        runlane["subscribed_channels"] = sum(int(c.get("sub", 0)) for c in clients)
        release(procs)
    finally:
        dep.close()

    port = free_port()
    log = (ROOT / "bench" / "results")
    log.mkdir(parents=True, exist_ok=True)
    bare_proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--worker-connections",
         "20000", "-b", f"127.0.0.1:{port}", "--chdir", str(ROOT / "bench"), "bare_app:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(port)
        bare_pid = children(bare_proc.pid)[0]
        bare = measure(bare_pid, port, "/ws", args.sockets, args.clients, runlane=False)
    finally:
        bare_proc.terminate()
        bare_proc.wait(20)

    ratio = runlane["kb_per_socket"] / bare["kb_per_socket"] if bare["kb_per_socket"] else None
    result = {"runlane": runlane, "bare_flask_sock": bare,
              "ratio": round(ratio, 2) if ratio else None}
    name = f"sockets_memory_{args.users}users.json" if args.users else "sockets_memory.json"
    (log / name).write_text(json.dumps(result, indent=2))
    print(f"{'':<24}{'Runlane':>12}{'bare flask-sock':>18}")
    for key in ("sockets", "kb_per_socket", "rss_before_kb", "rss_after_kb", "open_seconds"):
        print(f"{key:<24}{runlane[key]:>12}{bare[key]:>18}")
    print(f"{'ratio (per socket)':<24}{result['ratio']:>12}")
    print(f"{'pub/sub connections':<24}{runlane['pubsub_connections']:>12}  "
          f"(subscribed channels while 200 users held: {runlane['subscribed_channels']})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
                    sys.argv[6] == "1", int(sys.argv[7]))
    else:
        sys.exit(main())

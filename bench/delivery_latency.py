"""Targeted delivery latency, publish -> owner's socket, for many connected users with events
streaming, next to the raw floor (a bare Redis publish -> redis-py subscriber hop) measured
in the same run with the same Redis.

    python bench/delivery_latency.py [--users 1000] [--rate 500] [--seconds 20] [--max]
    python bench/delivery_latency.py --stalled 20 [--stall-rate 100 --stall-bytes 2048]

Each user holds one socket to one Runlane web process (gunicorn + gevent). A publisher process
publishes synthetic events (the real envelope, consecutive seq per run) on random users'
channels at `rate` per second; clients check every event is theirs, none is lost or repeated.
--max publishes as fast as it can to find delivered events/s at saturation.
--stalled N measures twice with the same settings: once as above, once with N more users
whose sockets stop reading right after `ready` while a second publisher floods them
(`--stall-rate` events/s each, `--stall-bytes` of padding), and reports the normal users'
latency of both passes side by side and how many stalled sockets the server cut off.
Writes bench/results/delivery_latency.json (delivery_stalled.json with --stalled).
"""
from __future__ import annotations

import argparse
import json
import random
import selectors
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    Deployment,
    FrameReader,
    load_average,
    percentile,
    pong_frame,
    raise_fd_limit,
    read_ready,
    rss_kb,
    ws_connect,
)

PREFIX = "runlane"


def envelope(user: str, seq: int, sent: float, pad: int = 0) -> str:
    data: dict[str, object] = {"t": sent, "user": user}
    if pad:
        data["pad"] = "x" * pad
    return json.dumps({"type": "agent_thinking", "run_id": f"{user}-run", "thread_id": "t",
                       "seq": seq, "cursor": seq, "ts": "2026-01-01T00:00:00Z",
                       "data": data}, separators=(",", ":"))


def publisher_main(redis_url: str, users: int, rate: float, seconds: float, out: str,
                   name: str = "lat", pad: int = 0) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    rng, seqs = random.Random(1), [0] * users
    interval = 1.0 / rate if rate > 0 else 0.0
    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < seconds:
        if interval and now < start + n * interval:
            time.sleep(min(start + n * interval - now, 0.001))
            continue
        u = rng.randrange(users)
        seqs[u] += 1
        user = f"{name}{u}"
        client.publish(f"{PREFIX}:user:{user}", envelope(user, seqs[u], time.time(), pad))
        n += 1
    Path(out).write_text(json.dumps({"published": n, "per_user": seqs,
                                     "seconds": time.perf_counter() - start}))


def client_main(port: int, first: int, count: int, token_secret: str, seconds: float,
                out: str) -> None:
    raise_fd_limit()
    from runlane.settings import load
    from runlane.tokens import issue_token

    settings = load()
    sel, readers = selectors.DefaultSelector(), {}
    for u in range(first, first + count):
        user = f"lat{u}"
        token = issue_token(settings, token_secret, user)
        s, pending = ws_connect(port, "/api/agents/v2/ws", token)
        reader = FrameReader(pending)
        read_ready(s, reader)
        for opcode, payload in reader.feed(b""):  # a ping that came with `ready`
            if opcode == 9:
                s.sendall(pong_frame(payload))
        s.setblocking(False)
        readers[s] = (user, reader)
        sel.register(s, selectors.EVENT_READ)
        if len(readers) % 20 == 0:  # answer keep-alive pings while the others connect
            for key, _ in sel.select(timeout=0):
                try:
                    frames = readers[key.fileobj][1].feed(key.fileobj.recv(65536))
                except BlockingIOError:
                    continue
                for opcode, payload in frames:
                    if opcode == 9:
                        key.fileobj.setblocking(True)
                        key.fileobj.sendall(pong_frame(payload))
                        key.fileobj.setblocking(False)
    print("READY", flush=True)
    latencies, received, foreign, last_seq, disorder, closed = [], 0, 0, {}, 0, 0
    deadline = time.time() + seconds + 5
    while time.time() < deadline:
        for key, _ in sel.select(timeout=0.5):
            user, reader = readers[key.fileobj]
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            now = time.time()
            for opcode, payload in reader.feed(data):
                if opcode == 9:  # the server's keep-alive ping
                    key.fileobj.setblocking(True)
                    key.fileobj.sendall(pong_frame(payload))
                    key.fileobj.setblocking(False)
                if opcode == 8:
                    closed += 1
                if opcode != 1:
                    continue
                event = json.loads(payload)
                if event.get("data", {}).get("user") != user:
                    foreign += 1
                    continue
                received += 1
                if event["seq"] != last_seq.get(user, 0) + 1:
                    disorder += 1
                last_seq[user] = event["seq"]
                latencies.append((now - event["data"]["t"]) * 1000)
    Path(out).write_text(json.dumps({"latencies": latencies, "received": received,
                                     "foreign": foreign, "disorder": disorder, "closed": closed,
                                     "last_seq": last_seq}))


def stalled_main(port: int, count: int, token_secret: str, seconds: float, out: str) -> None:
    """Clients that read `ready` and then nothing; afterwards, which sockets the server cut."""
    raise_fd_limit()
    from runlane.settings import load
    from runlane.tokens import issue_token

    settings = load()
    held = []
    for u in range(count):
        s, pending = ws_connect(port, "/api/agents/v2/ws",
                                issue_token(settings, token_secret, f"stall{u}"), rcvbuf=4096)
        reader = FrameReader(pending)
        read_ready(s, reader)
        held.append((s, reader))
    print("READY", flush=True)
    time.sleep(seconds + 5)
    cut, codes = 0, {}
    for s, reader in held:  # now drain: buffered frames, then the server's close or EOF
        s_closed = False
        s.settimeout(2)
        try:
            while not s_closed:
                data = s.recv(65536)
                if not data:
                    s_closed = True
                for opcode, payload in reader.feed(data):
                    if opcode == 8:
                        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                        codes[code] = codes.get(code, 0) + 1
                        s_closed = True
        except ConnectionResetError:
            s_closed = True
        except OSError:  # still open: nothing more came within the timeout
            pass
        cut += s_closed
        s.close()
    Path(out).write_text(json.dumps({"stalled": count, "cut": cut, "close_codes": codes}))


def raw_floor(redis_url: str, rate: float, seconds: float) -> list[float]:
    """Bare Redis: publish with a timestamp, a redis-py subscriber measures the hop."""
    import threading

    import redis

    pub, sub = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url).pubsub()
    sub.subscribe("floor")
    sub.get_message(timeout=1)
    lat: list[float] = []

    def listen() -> None:
        end = time.time() + seconds + 2
        while time.time() < end:
            msg = sub.get_message(timeout=0.5)
            if msg and msg["type"] == "message":
                lat.append((time.time() - float(msg["data"])) * 1000)

    t = threading.Thread(target=listen)
    t.start()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if time.perf_counter() >= start + n / rate:
            pub.publish("floor", repr(time.time()))
            n += 1
        else:
            time.sleep(0.0005)
    t.join()
    return lat


def measure(args: argparse.Namespace, stalled: int, env: dict[str, str]) -> dict:
    """One pass: a fresh deployment, `args.users` reading clients, `stalled` stalled ones."""
    rate = 0.0 if args.max else args.rate
    dep = Deployment(env)
    tmp = dep.workdir
    try:
        from common import SECRET

        per = args.users // args.clients
        clients = []
        for c in range(args.clients):
            count = per if c < args.clients - 1 else args.users - per * (args.clients - 1)
            clients.append(subprocess.Popen(
                [sys.executable, __file__, "--client", str(dep.port), str(c * per), str(count),
                 SECRET, str(args.seconds), str(tmp / f"client{c}.json")],
                stdout=subprocess.PIPE, text=True, cwd=ROOT))
        if stalled:
            clients.append(subprocess.Popen(
                [sys.executable, __file__, "--stalled-client", str(dep.port), str(stalled),
                 SECRET, str(args.seconds), str(tmp / "stalled.json")],
                stdout=subprocess.PIPE, text=True, cwd=ROOT))
        for p in clients:
            assert p.stdout.readline().startswith("READY")  # type: ignore[union-attr]
        pubs = [subprocess.Popen([sys.executable, __file__, "--publisher", dep.redis.url,
                                  str(args.users), str(rate), str(args.seconds),
                                  str(tmp / "publisher.json")], cwd=ROOT)]
        if stalled:
            pubs.append(subprocess.Popen(
                [sys.executable, __file__, "--publisher", dep.redis.url, str(stalled),
                 str(stalled * args.stall_rate), str(args.seconds), str(tmp / "flood.json"),
                 "stall", str(args.stall_bytes)], cwd=ROOT))
        for p in pubs:
            p.wait()
        for p in clients:
            p.wait(args.seconds + 60 + 2 * stalled)
        published = json.loads((tmp / "publisher.json").read_text())
        latencies, received, foreign, disorder, closed = [], 0, 0, 0, 0
        last: dict[str, int] = {}
        for c in range(args.clients):
            data = json.loads((tmp / f"client{c}.json").read_text())
            latencies += data["latencies"]
            received += data["received"]
            foreign += data["foreign"]
            disorder += data["disorder"]
            closed += data["closed"]
            last.update(data["last_seq"])
        lost = sum(max(0, n - last.get(f"lat{u}", 0)) for u, n in enumerate(published["per_user"]))
        floor = raw_floor(dep.redis.url, args.rate, min(args.seconds, 10)) if not stalled else []
        rss = rss_kb(dep.worker_pid())
    finally:
        dep.close()
    result: dict[str, object] = {
        "users": args.users, "target_rate": rate or "max", "seconds": args.seconds,
        "published": published["published"],
        "published_per_s": round(published["published"] / published["seconds"], 1),
        "delivered": received, "delivered_per_s": round(received / args.seconds, 1),
        "lost": lost, "foreign": foreign, "out_of_order": disorder,
        "closed_by_server": closed,
        "latency_ms": {q: round(percentile(latencies, q), 2) for q in (50, 95, 99, 100)},
        "web_rss_kb_at_end": rss, "load_average": load_average(),
    }
    if floor:
        result["raw_floor_ms"] = {q: round(percentile(floor, q), 2) for q in (50, 95, 99, 100)}
    if stalled:
        flood = json.loads((tmp / "flood.json").read_text())
        result["stalled"] = {**json.loads((tmp / "stalled.json").read_text()),
                             "flood_published": flood["published"],
                             "flood_bytes_each": args.stall_bytes}
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--max", action="store_true", help="publish as fast as possible")
    parser.add_argument("--stalled", type=int, default=0,
                        help="also measure with this many non-reading users' sockets")
    parser.add_argument("--stall-rate", type=float, default=100,
                        help="events/s published to each stalled user")
    parser.add_argument("--stall-bytes", type=int, default=2048,
                        help="padding per event sent to stalled users")
    parser.add_argument("--ping-interval", type=float, default=None,
                        help="RUNLANE_SOCKET_PING_INTERVAL for the web process (both passes); "
                             "a stalled socket is cut one interval after its queue overflowed")
    args = parser.parse_args()
    env = {}
    ping = args.ping_interval if args.ping_interval is not None else (5.0 if args.stalled else None)
    if ping is not None:
        env["RUNLANE_SOCKET_PING_INTERVAL"] = str(ping)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    if not args.stalled:
        result = measure(args, 0, env)
        name = "delivery_max.json" if args.max else "delivery_latency.json"
        (out / name).write_text(json.dumps(result, indent=2))
        for key, value in result.items():
            print(f"{key:<20}{value}")
        return 0 if result["lost"] == 0 and result["foreign"] == 0 else 1
    baseline = measure(args, 0, env)
    with_stalled = measure(args, args.stalled, env)
    result = {"ping_interval": ping, "without_stalled": baseline,
              "with_stalled": with_stalled}
    (out / "delivery_stalled.json").write_text(json.dumps(result, indent=2))
    print(f"{'':<22}{'no stalled':>22}{f'{args.stalled} stalled':>22}")
    for key in ("published", "delivered", "lost", "foreign", "out_of_order",
                "closed_by_server", "latency_ms",
                "web_rss_kb_at_end", "load_average"):
        print(f"{key:<22}{baseline[key]!s:>22}{with_stalled[key]!s:>22}")
    print(f"{'stalled sockets':<22}{with_stalled['stalled']!s:>44}")
    ok = all(r["lost"] == 0 and r["foreign"] == 0 for r in (baseline, with_stalled))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5],
                    float(sys.argv[6]), sys.argv[7])
    elif len(sys.argv) > 1 and sys.argv[1] == "--stalled-client":
        stalled_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]),
                     sys.argv[6])
    elif len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        publisher_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]),
                       sys.argv[6], *([sys.argv[7], int(sys.argv[8])] if len(sys.argv) > 8 else []))
    else:
        sys.exit(main())

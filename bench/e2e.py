"""End-to-end latency of one `echo` run, next to the raw floor measured in the same run.

    python bench/e2e.py [--runs 1000] [--blocks 10] [--rounds 3] [--thread-per-run]
                         [--floor-transport kombu|runlane]

Runlane: `POST /api/agents/v2/thread/<t>/runs` -> `agent_started`, and -> `agent_completed`,
as they arrive on the owner's websocket (one `runlane web` under gunicorn + gevent, one
worker process `celery -A tasks worker -P prefork -c 1`, embedded Redis, SQLite).

Raw floor, same Redis, same Celery settings (`bench/bare_celery.py` loads `celeryconfig`) on
stock Celery (kombu's own Redis transport; `--floor-transport runlane` gives it Runlane's):
a bare Celery task round trip (send -> a prefork `-c 1` worker runs the task -> it publishes
on a Redis channel -> a redis-py subscriber here gets it), and the bare Redis
publish -> subscriber hop alone. Reference (not a floor): the same round trip started over
HTTP by hand-rolled glue, a bare Flask route under the same gunicorn settings that only sends
the task (`bench/bare_json_app.py` `/glue`): what the HTTP hop alone adds, before any of
Runlane's guarantees (auth, rate limit, the run committed before the send, the log, the
router). Runs are sequential (one in flight), measured in interleaved
blocks so that the machine's noise falls on both sides alike. Each round is a fresh deployment;
the same code gives p50 ratios up to ~0.3x apart from one deployment to the next on a 2-core
VM, so the table pools the rounds and the ratio of each round is printed too.
Writes bench/results/e2e.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Deployment,
    FrameReader,
    load_average,
    machine,
    percentile,
    print_table,
    read_ready,
    start_bare_web,
    start_worker,
    stop_group,
    stop_on_sigterm,
    write_result,
    ws_connect,
)

TERMINAL = {"agent_completed", "agent_failed", "agent_cancelled", "agent_timed_out"}
WAIT = 30.0  # seconds one run may take before the benchmark gives up on it


class SocketEvents:
    """The owner's websocket, read by a thread that stamps each event on arrival."""

    def __init__(self, port: int, token: str) -> None:
        self._sock, pending = ws_connect(port, "/api/agents/v2/ws", token)
        self._reader = FrameReader(pending)
        read_ready(self._sock, self._reader)
        self._lock = threading.Lock()
        self._arrived: dict[str, dict[str, float]] = {}
        self._seqs: dict[str, list[int]] = {}
        self._done: dict[str, threading.Event] = {}
        self._closing = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closing:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            now = time.perf_counter()
            for opcode, payload in self._reader.feed(data):
                if opcode != 1:
                    continue
                event = json.loads(payload)
                run_id = event.get("run_id")
                if run_id is None:
                    continue
                with self._lock:
                    self._arrived.setdefault(run_id, {})[event["type"]] = now
                    self._seqs.setdefault(run_id, []).append(event["seq"])
                    if event["type"] in TERMINAL:
                        self._done.setdefault(run_id, threading.Event()).set()

    def wait(self, run_id: str) -> tuple[dict[str, float], list[int]]:
        """Arrival times by event type, and the seqs received, once the run ended."""
        with self._lock:
            done = self._done.setdefault(run_id, threading.Event())
        if not done.wait(WAIT):
            raise TimeoutError(f"run {run_id} did not end within {WAIT}s")
        with self._lock:
            return self._arrived.pop(run_id), self._seqs.pop(run_id)

    def close(self) -> None:
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


class RunlaneProbe:
    """Submits `echo` runs over HTTP (keep-alive) and times their events on the socket."""

    def __init__(self, port: int, token: str, *, thread_per_run: bool) -> None:
        self._http = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._socket = SocketEvents(port, token)
        self._thread_per_run = thread_per_run
        self.started: list[float] = []
        self.completed: list[float] = []
        self.accepted: list[float] = []
        self.bad: list[str] = []

    def one(self, n: int, *, record: bool = True) -> None:
        thread = f"e2e{n}" if self._thread_per_run else "e2e"
        body = json.dumps({"agent": "echo", "input": {"n": n}})
        t0 = time.perf_counter()
        self._http.request("POST", f"/api/agents/v2/thread/{thread}/runs", body, self._headers)
        response = self._http.getresponse()
        answer = response.read()
        t_accepted = time.perf_counter()
        if response.status != 202:
            raise RuntimeError(f"submit answered {response.status}: {answer[:200]!r}")
        run_id = json.loads(answer)["run_id"]
        arrived, seqs = self._socket.wait(run_id)
        if seqs != [1, 2] or "agent_completed" not in arrived:
            self.bad.append(run_id)
        if record:
            self.accepted.append((t_accepted - t0) * 1000)
            self.started.append((arrived["agent_started"] - t0) * 1000)
            self.completed.append((arrived["agent_completed"] - t0) * 1000)

    def close(self) -> None:
        self._http.close()
        self._socket.close()


class Subscriber:
    """A redis-py subscriber thread that stamps each payload on arrival."""

    def __init__(self, redis_url: str, channel: str) -> None:
        import redis

        self._pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel)
        deadline = time.monotonic() + 10
        while not self._pubsub.subscribed and time.monotonic() < deadline:
            self._pubsub.get_message(timeout=0.1)
        if not self._pubsub.subscribed:
            raise RuntimeError(f"could not subscribe to {channel}")
        self._lock = threading.Lock()
        self._arrived: dict[str, float] = {}
        self._done: dict[str, threading.Event] = {}
        self._closing = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closing:
            try:
                message = self._pubsub.get_message(timeout=0.2)
            except Exception:  # noqa: BLE001 - closing under our feet
                return
            if message is None:
                continue
            now = time.perf_counter()
            token = message["data"].decode()
            with self._lock:
                self._arrived[token] = now
                self._done.setdefault(token, threading.Event()).set()

    def wait(self, token: str) -> float:
        with self._lock:
            done = self._done.setdefault(token, threading.Event())
        if not done.wait(WAIT):
            raise TimeoutError(f"{token} never arrived")
        with self._lock:
            self._done.pop(token)
            return self._arrived.pop(token)

    def close(self) -> None:
        self._closing = True
        self._thread.join(2)
        self._pubsub.close()


class _SubscribedProbe:
    """A round trip that ends when our subscriber gets the probe's token on its channel;
    subclasses say how the trip starts (`_start`)."""

    name = "probe"

    def __init__(self, redis_url: str) -> None:
        self._channel = f"bench:{self.name}:{uuid.uuid4().hex}"
        self._subscriber = Subscriber(redis_url, self._channel)
        self.times: list[float] = []

    def _start(self, token: str) -> None:
        raise NotImplementedError

    def one(self, n: int, *, record: bool = True) -> None:
        token = f"{n}-{uuid.uuid4().hex}"
        t0 = time.perf_counter()
        self._start(token)
        arrived = self._subscriber.wait(token)
        if record:
            self.times.append((arrived - t0) * 1000)

    def close(self) -> None:
        self._subscriber.close()


class CeleryFloor(_SubscribedProbe):
    """send -> bare prefork worker runs `bare.ping` -> Redis publish -> our subscriber."""

    name = "floor"

    def __init__(self, redis_url: str) -> None:
        import bare_celery

        self._task = bare_celery.ping
        super().__init__(redis_url)

    def _start(self, token: str) -> None:
        self._task.apply_async(args=[self._channel, token])


class GlueReference(_SubscribedProbe):
    """POST to the bare Flask route `/glue` -> it sends `bare.ping` -> our subscriber."""

    name = "glue"

    def __init__(self, port: int, redis_url: str) -> None:
        self._http = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        super().__init__(redis_url)

    def _start(self, token: str) -> None:
        body = json.dumps({"channel": self._channel, "payload": token})
        self._http.request("POST", "/glue", body, {"Content-Type": "application/json"})
        response = self._http.getresponse()
        response.read()
        if response.status != 202:
            raise RuntimeError(f"/glue answered {response.status}")

    def close(self) -> None:
        self._http.close()
        super().close()


class PubSubFloor(_SubscribedProbe):
    """The bare Redis publish -> redis-py subscriber hop."""

    name = "hop"

    def __init__(self, redis_url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url)
        super().__init__(redis_url)

    def _start(self, token: str) -> None:
        self._client.publish(self._channel, token)

    def close(self) -> None:
        super().close()
        self._client.close()


def summary(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q), 3) for q in (50, 95, 99)}


class Samples:
    """Milliseconds per measure, pooled over the rounds."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[float]] = {}

    def add(self, name: str, values: list[float]) -> None:
        self.by_name.setdefault(name, []).extend(values)


def one_round(args: argparse.Namespace) -> tuple[dict[str, list[float]], int]:
    """One fresh deployment (web, workers, Redis, database) measured in interleaved blocks,
    in a process of its own (Celery's app in this process is bound to one Redis). Returns
    the samples by measure and the runs with missing or extra events."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_measure_round, (args,))


def _measure_round(args: argparse.Namespace) -> tuple[dict[str, list[float]], int]:
    stop_on_sigterm()
    dep = Deployment({"RUNLANE_SUBMIT_RATE_PER_MINUTE": "100000000"})
    workers, probes = [], []
    glue_web = None
    try:
        glue_web, glue_port = start_bare_web(dep.env, dep.workdir / "glue-web.log")
        workers.append(start_worker(dep.env, dep.workdir / "worker.log", app="tasks",
                                    queue="runlane", name="runlane"))
        workers.append(start_worker(dep.env, dep.workdir / "bare.log", app="bare_celery",
                                    queue="bare", name="bare"))
        runlane = RunlaneProbe(dep.port, dep.token("e2e-user"), thread_per_run=args.thread_per_run)
        probes.append(runlane)
        celery_floor = CeleryFloor(dep.redis.url)
        probes.append(celery_floor)
        hop = PubSubFloor(dep.redis.url)
        probes.append(hop)
        glue = GlueReference(glue_port, dep.redis.url)
        probes.append(glue)
        for n in range(args.warmup):
            runlane.one(n, record=False)
            celery_floor.one(n, record=False)
            hop.one(n, record=False)
            glue.one(n, record=False)
        per_block = max(1, args.runs // args.blocks)
        n = args.warmup
        while len(runlane.completed) < args.runs:
            size = min(per_block, args.runs - len(runlane.completed))
            for _ in range(size):
                runlane.one(n)
                n += 1
            for _ in range(size):
                celery_floor.one(n)
                hop.one(n)
                n += 1
            for _ in range(size):  # apart from the floor: its web process must be idle then
                glue.one(n)
                n += 1
    finally:
        for probe in probes:
            probe.close()
        for worker in workers:
            stop_group(worker)
        if glue_web is not None:
            stop_group(glue_web)
        dep.close()
    return {
        "submit_to_202": runlane.accepted, "submit_to_agent_started": runlane.started,
        "submit_to_agent_completed": runlane.completed,
        "celery_task_round_trip": celery_floor.times, "redis_publish_to_subscriber": hop.times,
        "http_glue_round_trip": glue.times,
    }, len(runlane.bad)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="measured runs per side and round")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=10, help="interleaved measuring blocks")
    parser.add_argument("--rounds", type=int, default=3,
                        help="fresh deployments measured one after the other (pooled)")
    parser.add_argument("--thread-per-run", action="store_true",
                        help="a new thread per run (default: all runs in one thread)")
    parser.add_argument("--floor-transport", choices=["kombu", "runlane"], default="kombu",
                        help="the floor's Redis transport: kombu's stock one (the raw floor), "
                             "or Runlane's (tasks/broker.py), to see what it saves the floor")
    parser.add_argument("--sql", choices=["direct", "core"], default="direct",
                        help="Runlane's per-run statements on the driver's cursor (the "
                             "default) or through SQLAlchemy Core (RUNLANE_DIRECT_SQL=false)")
    parser.add_argument("--out", default="e2e", help="result name under bench/results/")
    args = parser.parse_args()
    # The rounds' processes inherit both.
    os.environ["BARE_CELERY_TRANSPORT"] = args.floor_transport
    os.environ["RUNLANE_DIRECT_SQL"] = "true" if args.sql == "direct" else "false"
    stop_on_sigterm()
    load_before = load_average()
    pooled = Samples()
    round_ratios: list[float] = []
    bad = 0
    started = time.monotonic()
    for index in range(args.rounds):
        samples, round_bad = one_round(args)
        for name, values in samples.items():
            pooled.add(name, values)
        ratio = round(summary(samples["submit_to_agent_completed"])["p50"]
                      / summary(samples["celery_task_round_trip"])["p50"], 2)
        round_ratios.append(ratio)
        bad += round_bad
        print(f"round {index + 1}: agent completed p50 / floor p50 = {ratio}x "
              f"(load {load_average()})", flush=True)
    elapsed = time.monotonic() - started
    ms = {name: summary(values) for name, values in pooled.by_name.items()}
    floor = ms["celery_task_round_trip"]
    result: dict[str, Any] = {
        "runs": args.runs * args.rounds, "rounds": args.rounds, "runs_per_round": args.runs,
        "thread_per_run": args.thread_per_run, "floor_transport": args.floor_transport,
        "seconds": round(elapsed, 1),
        "machine": machine(), "load_average": {"before": load_before, "after": load_average()},
        "runlane_ms": {name: ms[name] for name in (
            "submit_to_202", "submit_to_agent_started", "submit_to_agent_completed")},
        "floor_ms": {name: ms[name] for name in (
            "celery_task_round_trip", "redis_publish_to_subscriber")},
        "reference_ms": {"http_glue_round_trip": ms["http_glue_round_trip"]},
        "p50_ratio_by_round": round_ratios,
        "bad_runs": bad,
    }
    result["ratio_to_floor"] = {
        name: {q: round(v / floor[q], 2) for q, v in values.items()}
        for name, values in result["runlane_ms"].items() if name != "submit_to_202"
    }
    glue_ms = result["reference_ms"]["http_glue_round_trip"]
    result["ratio_to_http_glue"] = {
        q: round(v / glue_ms[q], 2)
        for q, v in result["runlane_ms"]["submit_to_agent_completed"].items()
    }
    rows = [[name.replace("_", " "), *values.values()]
            for name, values in [*(("runlane: " + k, v) for k, v in result["runlane_ms"].items()),
                                 *(("floor: " + k, v) for k, v in result["floor_ms"].items()),
                                 *(("reference: " + k, v)
                                   for k, v in result["reference_ms"].items())]]
    rows += [[f"ratio: {k.replace('_', ' ')}", *(f"{x}x" for x in v.values())]
             for k, v in result["ratio_to_floor"].items()]
    rows += [["ratio: agent completed / http glue",
              *(f"{x}x" for x in result["ratio_to_http_glue"].values())]]
    print(f"echo, {args.runs} runs each side in each of {args.rounds} rounds (pooled), one in "
          f"flight; the floor on {args.floor_transport}'s Redis transport; load average "
          f"{result['load_average']['before']} -> {result['load_average']['after']}")
    print_table(["ms", "p50", "p95", "p99"], rows)
    print(f"p50 ratio (agent completed / floor) by round: "
          f"{', '.join(f'{r}x' for r in round_ratios)}")
    print(f"runs with missing/extra events: {bad}")
    print(f"wrote {write_result(args.out, result)}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())

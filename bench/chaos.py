"""Chaos: kill Celery workers at random (SIGKILL, whole process group) while runs are in
flight, and check that every run reached a terminal state, that no run's attempts overlapped,
and that every run's event log is gapless. Reports how fast lost runs were picked up again.

    python bench/chaos.py [--runs 200] [--users 20] [--workers 3] [--kill-every 3]

With `--mode redis-restart` it SIGKILLs Redis instead while runs are in flight (and each user
holds a live socket), starts it again on the same port `--outage` seconds later, and reports
every run terminal, the events each live socket missed (stored, never delivered to it), and
how long the stack took to serve again: until a worker started a run after Redis was back, and
until a run submitted then completed (behind whatever backlog the queue held).
Writes bench/results/chaos-redis.json.

    python bench/chaos.py --mode redis-restart [--runs 40] [--users 8] [--outage 5] [--rate 1.5]

Runs against an isolated stack it starts itself (embedded Redis, SQLite, gunicorn web,
prefork workers); nothing else is needed. Writes bench/results/chaos.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
sys.path.insert(0, str(ROOT))

from runlane.settings import load  # noqa: E402
from runlane.tokens import issue_token  # noqa: E402
from tests.processes import Stack, kill_group  # noqa: E402
from tests.support import User  # noqa: E402

TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


def check_run(events: list[dict]) -> list[str]:
    """Problems in one run's log: gaps, or two attempts interleaving (ran at once)."""
    problems = []
    if [e["seq"] for e in events] != list(range(1, len(events) + 1)):
        problems.append("seq gap or repeat")
    expected_call = 0
    for event in events:  # each attempt restarts its tool calls at 1 and counts up
        if event["type"] == "agent_started":
            expected_call = 0
        elif event["type"] == "tool_executing":
            expected_call += 1
            if event["data"]["call_id"] != expected_call:
                problems.append(f"attempts overlapped at seq {event['seq']}")
    if events and events[-1]["type"] not in {"agent_completed", "agent_failed",
                                              "agent_cancelled", "agent_timed_out"}:
        problems.append("log does not end with a terminal event")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("kill-workers", "redis-restart"),
                        default="kill-workers")
    parser.add_argument("--runs", type=int, default=None,
                        help="200 (kill-workers), 40 (redis-restart)")
    parser.add_argument("--users", type=int, default=None, help="20, or 8")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds Redis stays down")
    parser.add_argument("--rate", type=float, default=1.5, help="runs submitted per second "
                        "(redis-restart)")
    parser.add_argument("--deadline", type=float, default=300.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    args = parser.parse_args()
    if args.mode == "redis-restart":
        args.runs = args.runs or 40
        args.users = args.users or 8
        return redis_restart(args)
    args.runs = args.runs or 200
    args.users = args.users or 20
    return kill_workers(args)


class LiveSocket:
    """One user's socket, read by its own thread for the whole test; never resumed, so what
    it misses is what live delivery lost."""

    def __init__(self, user: User) -> None:
        self.sock = user.socket()
        self.sock.recv_json()  # ready: subscribed
        self.seen: set[tuple[str, int]] = set()
        self.closed_with: int | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                frame = self.sock.recv_json(timeout=3600)
            except Exception:  # noqa: BLE001 - the socket broke: counted as closed
                frame = None
            if frame is None:
                self.closed_with = self.sock.close_code or -1
                return
            if "seq" in frame:
                self.seen.add((frame["run_id"], frame["seq"]))

    def close(self) -> None:
        self.sock.close()


SECRET = "chaos-secret-" + "z" * 40


def _stack(args: argparse.Namespace, prefix: str) -> tuple[Stack, str]:
    """A fresh stack in its own folder, signing with a secret this script knows."""
    os.environ["RUNLANE_SECRET_KEY"] = SECRET
    stack = Stack(Path(tempfile.mkdtemp(prefix=prefix)),
                  {"RUNLANE_HEARTBEAT_INTERVAL": str(args.heartbeat), "RUNLANE_MAX_ATTEMPTS": "5"})
    return stack, SECRET


def redis_restart(args: argparse.Namespace) -> int:
    stack, secret = _stack(args, "runlane-chaos-redis-")
    rng = random.Random(7)
    sockets: list[LiveSocket] = []
    try:
        workers = [stack.worker(f"w{i}", concurrency=2) for i in range(args.workers)]
        base = stack.web()
        settings = load()
        users = {f"user{u}": User(f"user{u}", issue_token(settings, secret, f"user{u}"), base)
                 for u in range(args.users)}
        sockets = [LiveSocket(u) for u in users.values()]
        runs: dict[str, User] = {}
        # Runs arrive at a steady rate, before, during and after the outage, so workers have
        # runs in flight *and* free pool slots (a consumer waiting on the queue) when Redis dies.
        def submit_all() -> None:
            for n in range(args.runs):
                user = users[f"user{n % args.users}"]
                body = {"agent": "demo", "input": {"steps": rng.randint(4, 10),
                                                   "delay_ms": rng.randint(200, 600)}}
                r = user.post(f"/api/agents/v2/thread/t{n}/runs", json=body)
                r.raise_for_status()
                runs[r.json()["run_id"]] = user
                time.sleep(1 / args.rate)

        submitter = threading.Thread(target=submit_all)
        submitter.start()

        def status(run_id: str) -> str:
            return str(runs[run_id].get(f"/api/agents/v2/{run_id}/state").json()["status"])

        while len(runs) < args.runs // 3:
            time.sleep(0.1)
        in_flight = Counter(status(r) for r in list(runs))
        process = stack.redis.process
        assert process is not None
        process.kill()
        process.wait()
        stack.redis.process = None
        killed = time.monotonic()
        time.sleep(args.outage)
        stack.redis.start()
        back, back_wall = time.monotonic(), time.time()
        probe_user = users["user0"]
        probe = probe_user.submit("probe", "echo", "serving again")["run_id"]
        probe_state = probe_user.wait_for_state(probe, {"completed", "failed"}, timeout=120)
        served_again = time.monotonic() - back
        submitter.join()

        finished = time.monotonic() + args.deadline
        current = {r: status(r) for r in runs}
        while any(s not in TERMINAL for s in current.values()) and time.monotonic() < finished:
            time.sleep(0.5)
            current = {r: status(r) for r in runs}
        time.sleep(1.0)  # the last live events are on their way to the sockets
        missing = 0
        problems: dict[str, list[str]] = {}
        seen = set().union(*(s.seen for s in sockets))
        for run_id, user in runs.items():
            events = user.get(f"/api/agents/v2/{run_id}/events",
                              params={"limit": 1000}).json()["items"]
            if found := check_run(events):
                problems[run_id] = found
            missing += sum((run_id, e["seq"]) not in seen for e in events)
        statuses = Counter(current.values())
        # Consuming again: the first run a worker started after Redis was back (its log line).
        starts = [datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                  for log in stack.workdir.glob("w*.log")
                  for line in log.read_text(errors="replace").splitlines()
                  if "run started:" in line and (found := STAMP.match(line))]
        later = [t - back_wall for t in starts if t >= back_wall]
        result = {
            "mode": "redis-restart", "runs": args.runs, "users": args.users,
            "workers": args.workers, "outage_s": args.outage, "rate_per_s": args.rate,
            "at_kill": dict(in_flight), "statuses": dict(statuses),
            "not_terminal": sum(v for k, v in statuses.items() if k not in TERMINAL),
            "runs_with_problems": problems,
            "events_missing_on_live_sockets": missing,
            "sockets_closed": sum(s.closed_with is not None for s in sockets),
            "first_run_started_after_redis_back_s": round(min(later), 2) if later else None,
            "probe_completed_after_redis_back_s": round(served_again, 2),
            "probe_status": probe_state["status"],
            "workers_alive": sum(w.poll() is None for w in workers),
            "seconds": round(time.monotonic() - killed, 1),
        }
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "chaos-redis.json").write_text(json.dumps(result, indent=2))
        for key, value in result.items():
            print(f"{key:<38}{value}")
        ok = (result["not_terminal"] == 0 and not problems and probe_state["status"] ==
              "completed" and result["workers_alive"] == args.workers)
        return 0 if ok else 1
    finally:
        for live in sockets:
            live.close()
        stack.close()


def kill_workers(args: argparse.Namespace) -> int:
    stack, secret = _stack(args, "runlane-chaos-")
    rng = random.Random(7)
    try:
        workers = {f"w{i}": stack.worker(f"w{i}", concurrency=2) for i in range(args.workers)}
        base = stack.web()
        settings = load()
        tokens = {f"user{u}": issue_token(settings, secret, f"user{u}") for u in range(args.users)}
        runs: dict[str, str] = {}
        started = time.monotonic()
        for n in range(args.runs):
            user = f"user{n % args.users}"
            body = {"agent": "demo", "input": {"steps": rng.randint(3, 8),
                                               "delay_ms": rng.randint(100, 300)}}
            r = requests.post(f"{base}/api/agents/v2/thread/t{n}/runs", json=body, timeout=30,
                              headers={"Authorization": f"Bearer {tokens[user]}"})
            r.raise_for_status()
            runs[r.json()["run_id"]] = user
        kills: list[tuple[float, str]] = []
        generation = 0
        deadline = started + args.deadline

        def states() -> dict[str, dict]:
            out = {}
            for run_id, user in runs.items():
                out[run_id] = requests.get(
                    f"{base}/api/agents/v2/{run_id}/state", timeout=30,
                    headers={"Authorization": f"Bearer {tokens[user]}"}).json()
            return out

        next_kill = time.monotonic() + args.kill_every
        current = states()
        while time.monotonic() < deadline:
            if all(s["status"] in TERMINAL for s in current.values()):
                break
            if time.monotonic() >= next_kill:
                victim = rng.choice(sorted(workers))
                kill_group(workers.pop(victim))
                kills.append((time.time(), victim))
                generation += 1
                workers[f"{victim}g{generation}"] = stack.worker(f"{victim}g{generation}", 2)
                next_kill = time.monotonic() + args.kill_every
            time.sleep(0.5)
            current = states()
        elapsed = time.monotonic() - started

        problems: dict[str, list[str]] = {}
        restart_delays: list[float] = []
        for run_id, user in runs.items():
            events = requests.get(
                f"{base}/api/agents/v2/{run_id}/events", timeout=30, params={"limit": 1000},
                headers={"Authorization": f"Bearer {tokens[user]}"}).json()["items"]
            if found := check_run(events):
                problems[run_id] = found
            starts = [datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
                      for e in events if e["type"] == "agent_started"]
            for later in starts[1:]:  # attempt k+1 began: delay since the kill before it
                before = [k for k, _ in kills if k <= later]
                if before:
                    restart_delays.append(later - max(before))
        # Detection: kill -> the reaper re-dispatching a lost run (its log line's timestamp).
        detections: list[float] = []
        for log in stack.workdir.glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                # Runlane's text format starts with the time; Celery's own with "[time".
                if "lost its worker" in line and (found := STAMP.match(line)):
                    stamp = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    before = [k for k, _ in kills if k <= stamp]
                    if before:
                        detections.append(stamp - max(before))
        statuses = Counter(s["status"] for s in current.values())
        attempts = Counter(s["attempt"] for s in current.values())
        result = {
            "runs": args.runs, "users": args.users, "workers": args.workers,
            "kills": len(kills), "seconds": round(elapsed, 1),
            "heartbeat_interval": args.heartbeat,
            "statuses": dict(statuses),
            "attempts": {str(k): v for k, v in sorted(attempts.items())},
            "not_terminal": sum(v for k, v in statuses.items() if k not in TERMINAL),
            "runs_with_problems": problems,
            "redispatch_after_kill_s": {
                "count": len(detections),
                "p50": round(statistics.median(detections), 2) if detections else None,
                "max": round(max(detections), 2) if detections else None,
            },
            "restart_after_kill_s": {
                "count": len(restart_delays),
                "p50": round(statistics.median(restart_delays), 2) if restart_delays else None,
                "max": round(max(restart_delays), 2) if restart_delays else None,
            },
        }
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "chaos.json").write_text(json.dumps(result, indent=2))
        print(f"{'runs':<28}{args.runs}\n{'workers killed':<28}{len(kills)}\n"
              f"{'elapsed (s)':<28}{elapsed:.1f}\n{'statuses':<28}{dict(statuses)}\n"
              f"{'attempts':<28}{dict(sorted(attempts.items()))}\n"
              f"{'not terminal':<28}{result['not_terminal']}\n"
              f"{'runs with problems':<28}{len(problems)}\n"
              f"{'re-dispatch after kill (s)':<28}{result['redispatch_after_kill_s']}\n"
              f"{'restart after kill (s)':<28}{result['restart_after_kill_s']}")
        for run_id, found in list(problems.items())[:10]:
            print(f"  {run_id}: {', '.join(found)}")
        return 0 if result["not_terminal"] == 0 and not problems else 1
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())

"""Chaos: kill Celery workers at random (SIGKILL, whole process group) while runs are in
flight, and check that every run reached a terminal state, that no run's attempts overlapped,
and that every run's event log is gapless. Reports how fast lost runs were picked up again.

    python bench/chaos.py [--runs 200] [--users 20] [--workers 3] [--kill-every 3]

Runs against an isolated stack it starts itself (embedded Redis, SQLite, gunicorn web,
prefork workers); nothing else is needed. Writes bench/results/chaos.json.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
sys.path.insert(0, str(ROOT))

from runlane.settings import load  # noqa: E402
from tests.processes import Stack, kill_group  # noqa: E402
from webapp.auth import issue_token  # noqa: E402

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
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--deadline", type=float, default=300.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="runlane-chaos-"))
    secret = "chaos-secret-" + "z" * 40
    import os

    os.environ["RUNLANE_SECRET_KEY"] = secret
    stack = Stack(workdir, {"RUNLANE_HEARTBEAT_INTERVAL": str(args.heartbeat),
                            "RUNLANE_MAX_ATTEMPTS": "5"})
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
                out[run_id] = requests.get(f"{base}/api/agents/v2/{run_id}/state", timeout=30,
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
            events = requests.get(f"{base}/api/agents/v2/{run_id}/events", timeout=30,
                                  params={"limit": 1000},
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
        for log in workdir.glob("*.log"):
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
            "kills": len(kills), "seconds": round(elapsed, 1), "heartbeat_interval": args.heartbeat,
            "statuses": dict(statuses), "attempts": {str(k): v for k, v in sorted(attempts.items())},
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

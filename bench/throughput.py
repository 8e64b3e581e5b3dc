"""Throughput of one worker process and of one web process, next to bare baselines measured
in the same run on the same machine.

    python bench/throughput.py [--runs 2000] [--users 100] [--rounds 2] [--seconds 10]

Worker: N `echo` runs are queued first (submitted over HTTP while no worker runs), then one
worker process (`celery -A tasks worker -P prefork -c 1`) drains them; runs/s is counted
from the first run's start to the last run's end (from the database). Baseline: N bare no-op
tasks (`bench/bare_celery.py`: the same `celeryconfig`, so acks_late, prefetch 1, json) queued
on the same Redis and drained by a bare worker with the same pool and concurrency. Sides
alternate `--rounds` times.

Web: submissions/s of `echo` runs (POST, 202) by one `runlane web` process (gunicorn +
gevent, one worker), next to a bare Flask JSON route (`bench/bare_json_app.py`) under the same
gunicorn settings, each driven for `--seconds` by the same closed-loop keep-alive clients.
Writes bench/results/throughput.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Deployment,
    load_average,
    machine,
    print_table,
    start_bare_web,
    start_worker,
    stop_group,
    stop_on_sigterm,
    write_result,
)

RUNLANE_ENV = {
    # The benchmark is one client submitting for many users at once; the per-user guards
    # would answer 429, which is not what is measured here.
    "RUNLANE_SUBMIT_RATE_PER_MINUTE": "100000000",
    "RUNLANE_MAX_QUEUED_PER_USER": "100000000",
}


def submit_many(port: int, tokens: list[str], count: int, threads: int = 8) -> list[str]:
    """Queue `count` echo runs spread over the users; returns their run ids."""

    def batch(k: int) -> list[str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        ids = []
        for n in range(k, count, threads):
            token = tokens[n % len(tokens)]
            conn.request("POST", f"/api/agents/v2/thread/t{n % 7}/runs",
                         json.dumps({"agent": "echo", "input": {"n": n}}),
                         {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 202:
                raise RuntimeError(f"submit answered {response.status}: {body[:200]!r}")
            ids.append(json.loads(body)["run_id"])
        conn.close()
        return ids

    with ThreadPoolExecutor(threads) as pool:
        return [i for ids in pool.map(batch, range(threads)) for i in ids]


def runlane_round(dep: Deployment, tokens: list[str], runs: int, name: str) -> dict[str, Any]:
    """Queue `runs` echo runs, then let one worker process drain them."""
    from sqlalchemy import func, select

    from storage.db import Database
    from storage.models import Run

    ids = submit_many(dep.port, tokens, runs)
    db = Database(dep.env["DATABASE_URL"])
    log = dep.workdir / f"{name}.log"
    worker = start_worker(dep.env, log, app="tasks", queue="runlane", name=name)
    try:
        deadline = time.monotonic() + 60 + runs / 5
        while time.monotonic() < deadline:
            with db.session() as session:
                done = session.execute(select(func.count()).where(
                    Run.id.in_(ids), Run.finished_at.is_not(None))).scalar_one()
            if done == len(ids):
                break
            time.sleep(0.5)
        with db.session() as session:
            first, last = session.execute(
                select(func.min(Run.started_at), func.max(Run.finished_at))
                .where(Run.id.in_(ids))).one()
            statuses = dict(session.execute(select(Run.status, func.count()).where(Run.id.in_(ids))
                                            .group_by(Run.status)).all())
    finally:
        stop_group(worker)
        db.dispose()
    text = log.read_text(errors="replace")
    seconds = (last - first).total_seconds()
    return {"runs": len(ids), "seconds": round(seconds, 3),
            "per_s": round((len(ids) - 1) / seconds, 1),
            "statuses": statuses, "stale_messages": text.count(" is stale ")}


def bare_round(dep: Deployment, runs: int, name: str) -> dict[str, Any]:
    """Queue `runs` bare no-op tasks, then let one bare worker process drain them."""
    import bare_celery
    import redis

    key = f"bench:noop:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(dep.redis.url)
    for n in range(runs):
        bare_celery.noop.apply_async(args=[n, runs, key])
    worker = start_worker(dep.env, dep.workdir / f"{name}.log", app="bare_celery", queue="bare",
                          name=name)
    try:
        deadline = time.monotonic() + 60 + runs / 5
        while time.monotonic() < deadline and not client.hexists(key, "last"):
            time.sleep(0.2)
        first, last = (float(client.hget(key, f) or "nan") for f in ("first", "last"))
    finally:
        stop_group(worker)
        client.close()
    seconds = last - first
    return {"runs": runs, "seconds": round(seconds, 3), "per_s": round((runs - 1) / seconds, 1)}


# -- web: closed-loop keep-alive clients -------------------------------------------------

def client_main(port: int, path: str, tokens: list[str], connections: int, seconds: float,
                queue: Any) -> None:
    """One client process: `connections` threads, each a keep-alive connection POSTing."""
    import threading

    counts = [0] * connections
    errors = [0] * connections
    stop_at = time.monotonic() + seconds

    def loop(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = k
        while time.monotonic() < stop_at:
            token = tokens[n % len(tokens)] if tokens else ""
            conn.request("POST", path.format(thread=f"t{n % 7}"),
                         json.dumps({"agent": "echo", "input": {"n": n}}),
                         {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status == 202:
                counts[k] += 1
            else:
                errors[k] += 1
            n += connections
        conn.close()

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put((sum(counts), sum(errors)))


def drive(port: int, path: str, tokens: list[str], *, processes: int, connections: int,
          seconds: float) -> dict[str, Any]:
    """Requests/s answered 202 by the server at `port` under closed-loop load."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=client_main, args=(port, path, tokens, connections, seconds, queue))
             for _ in range(processes)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=seconds + 60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
    ok, errors = sum(r[0] for r in results), sum(r[1] for r in results)
    return {"accepted": ok, "errors": errors, "per_s": round(ok / seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs (and bare tasks) per round")
    parser.add_argument("--users", type=int, default=100, help="owners the runs are spread over")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10, help="per web measurement")
    parser.add_argument("--clients", type=int, default=2, help="client processes (web)")
    parser.add_argument("--connections", type=int, default=8, help="per client process")
    parser.add_argument("--skip-web", action="store_true")
    parser.add_argument("--skip-worker", action="store_true")
    args = parser.parse_args()
    stop_on_sigterm()
    load_before = load_average()
    dep = Deployment(RUNLANE_ENV)
    result: dict[str, Any] = {"machine": machine(), "users": args.users}
    bare_web = None
    try:
        tokens = [dep.token(f"tp{u}") for u in range(args.users)]
        submit_many(dep.port, tokens, 50)  # warm the web process
        if not args.skip_worker:
            rounds = []
            for r in range(args.rounds):
                rounds.append({"runlane": runlane_round(dep, tokens, args.runs, f"runlane{r}"),
                               "bare": bare_round(dep, args.runs, f"bare{r}"),
                               "load_average": load_average()})
                print(f"round {r + 1}: runlane {rounds[-1]['runlane']['per_s']}/s, "
                      f"bare {rounds[-1]['bare']['per_s']}/s (load {rounds[-1]['load_average']})",
                      flush=True)
            runlane = sum(r["runlane"]["per_s"] for r in rounds) / len(rounds)
            bare = sum(r["bare"]["per_s"] for r in rounds) / len(rounds)
            result["worker"] = {"rounds": rounds, "runlane_per_s": round(runlane, 1),
                                "bare_per_s": round(bare, 1), "ratio": round(runlane / bare, 3)}
        if not args.skip_web:
            bare_web, bare_port = start_bare_web(dep.env, dep.workdir / "bare-web.log")
            drive(bare_port, "/runs", [], processes=1, connections=2, seconds=1)  # warm-up
            web = {"runlane": drive(dep.port, "/api/agents/v2/thread/{thread}/runs", tokens,
                                    processes=args.clients, connections=args.connections,
                                    seconds=args.seconds),
                   "bare": drive(bare_port, "/runs", [], processes=args.clients,
                                 connections=args.connections, seconds=args.seconds)}
            web["ratio"] = round(web["runlane"]["per_s"] / web["bare"]["per_s"], 3)
            result["web"] = web
    finally:
        if bare_web is not None:
            stop_group(bare_web)
        dep.close()
    result["load_average"] = {"before": load_before, "after": load_average()}
    rows = []
    if "worker" in result:
        w = result["worker"]
        rows.append(["runs/s, one worker process (echo)", w["runlane_per_s"],
                     f"{w['bare_per_s']} (bare no-op task)", f"{w['ratio']:.0%}"])
    if "web" in result:
        w = result["web"]
        rows.append(["submissions/s, one web process", w["runlane"]["per_s"],
                     f"{w['bare']['per_s']} (bare Flask JSON)", f"{w['ratio']:.0%}"])
    print(f"load average {result['load_average']['before']} -> {result['load_average']['after']}")
    print_table(["measure", "Runlane", "baseline", "ratio"], rows)
    print(f"wrote {write_result('throughput', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

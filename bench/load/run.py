"""Load test: N simulated users, each holding a socket and submitting runs, against a running
deployment; throughput, latency per offered load, and a per-run completeness/isolation check.

    python -m bench.load [--users 1000] [--rates 10,25,50,100] [--seconds 20] [--drain 10]
    python -m bench.load --url http://127.0.0.1:8000 --secret "$RUNLANE_SECRET_KEY"

Without --url it starts `runlane up` itself (embedded Redis, SQLite, one prefork worker of
`--concurrency` children, gunicorn + gevent) in a temporary instance folder and stops it at
the end. With --url, tokens are minted like `runlane token` does: from --secret, else from the
environment / instance folder (`RUNLANE_SECRET_KEY`, `RUNLANE_INSTANCE_PATH`). Loopback only.

The offered load steps through `--rates` (runs per second over all users, each run for a random
user), `--seconds` each, with `--drain` seconds between steps. For every accepted run it checks
that its owner's socket received seq 1..N exactly once, in order, ending with the terminal
event, N being the run's `last_seq` read back over HTTP; and that no socket received a frame of
another user's run. Writes bench/results/load.json and the chart (docs/img/load-latency.png).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE.parent), str(HERE)]
from client import client_main  # noqa: E402
from common import (  # noqa: E402
    SECRET,
    free_port,
    load_average,
    machine,
    print_table,
    raise_fd_limit,
    stop_on_sigterm,
    wait_http,
    write_result,
)
from report import chart, step_figures, verify  # noqa: E402


class RunlaneUp:
    """`runlane up` in a temporary instance folder; stopped with SIGTERM like a user's Ctrl-C."""

    def __init__(self, concurrency: int) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="runlane-load-"))
        self.port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RUNLANE_") and k not in ("REDIS_URL", "DATABASE_URL")}
        env.update(RUNLANE_INSTANCE_PATH=str(self.workdir), RUNLANE_SECRET_KEY=SECRET,
                   RUNLANE_WEB_CONNECTIONS="20000")
        os.environ.update(RUNLANE_INSTANCE_PATH=str(self.workdir), RUNLANE_SECRET_KEY=SECRET)
        self.log = (self.workdir / "up.log").open("wb")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "runlane"), "up", "--port", str(self.port),
             "--concurrency", str(concurrency)],
            env=env, cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_http(self.port, timeout=90)
        except Exception:
            self.close()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def mint_tokens(users: list[str]) -> dict[str, str]:
    """What `runlane token --user U` prints, for each user (same settings, same secret)."""
    from runlane.settings import load
    from runlane.tokens import TokenVerifier

    verifier = TokenVerifier(load())
    return {u: verifier.issue(u) for u in users}


def read_last_seqs(url: str, submissions: list[dict[str, Any]],
                   tokens: dict[str, str]) -> dict[str, int]:
    """Each accepted run's `last_seq`, read by its owner over HTTP after the test."""

    def one(s: dict[str, Any]) -> tuple[str, int]:
        r = requests.get(f"{url}/api/agents/v2/{s['run_id']}/state", timeout=30,
                         headers={"Authorization": f"Bearer {tokens[s['user']]}"})
        r.raise_for_status()
        return s["run_id"], int(r.json()["last_seq"])

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, [s for s in submissions if "run_id" in s]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running deployment (default: start `runlane up`)")
    parser.add_argument("--secret", help="its RUNLANE_SECRET_KEY, to mint tokens")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rates", default="10,25,50,100", help="offered runs/s, one step each")
    parser.add_argument("--seconds", type=float, default=20, help="per step")
    parser.add_argument("--drain", type=float, default=10, help="quiet seconds after each step")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--concurrency", type=int, default=2, help="worker children (runlane up)")
    parser.add_argument("--agent", default="echo")
    parser.add_argument("--input", default='{"load": true}', help="the runs' input (JSON)")
    parser.add_argument("--chart", default=str(ROOT / "docs" / "img" / "load-latency.png"))
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--out", default="load", help="result name under bench/results/")
    args = parser.parse_args()
    if args.url and urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the load test only targets loopback")
    return args


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    raise_fd_limit()
    load_before = load_average()
    rates = [float(r) for r in args.rates.split(",")]
    steps, offset = [], 0.0
    for rate in rates:
        steps.append({"rate": rate, "seconds": args.seconds, "start": offset, "drain": args.drain})
        offset += args.seconds + args.drain
    deployment = None
    procs: list[Any] = []
    workdir = Path(tempfile.mkdtemp(prefix="runlane-load-clients-"))
    try:
        if args.url:
            if args.secret:
                os.environ["RUNLANE_SECRET_KEY"] = args.secret
            url = args.url.rstrip("/")
        else:
            deployment = RunlaneUp(args.concurrency)
            url = deployment.url
        users = [f"load{i}" for i in range(args.users)]
        tokens = mint_tokens(users)
        ctx = multiprocessing.get_context("spawn")
        ready, go = ctx.Queue(), ctx.Queue()
        per = -(-args.users // args.clients)
        slices = [users[i:i + per] for i in range(0, args.users, per)]
        connect_started = time.monotonic()
        for n, part in enumerate(slices):
            procs.append(ctx.Process(target=client_main, args=(
                url, {u: tokens[u] for u in part}, steps, len(part) / args.users, args.agent,
                json.loads(args.input), n, ready, go, str(workdir / f"client{n}.json"))))
            procs[-1].start()
        for _ in procs:
            ready.get(timeout=120 + args.users / 20)
        connect_seconds = time.monotonic() - connect_started
        print(f"{args.users} sockets connected in {connect_seconds:.1f}s; "
              f"{len(steps)} steps of {args.seconds:g}s (+{args.drain:g}s drain)", flush=True)
        for _ in procs:
            go.put(2.0)
        total = offset + 2.0
        for p in procs:
            p.join(total + 120)
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError("a client process failed")
        submissions: list[dict[str, Any]] = []
        frames: dict[str, list[Any]] = {}
        closed: dict[str, str] = {}
        for n in range(len(slices)):
            data = json.loads((workdir / f"client{n}.json").read_text())
            submissions += data["submissions"]
            frames.update(data["frames"])
            closed.update(data["closed"])
        last_seqs = read_last_seqs(url, submissions, tokens)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
        if deployment is not None:
            deployment.close()
    checked = verify(submissions, frames, last_seqs)
    figures = step_figures(steps, submissions, checked.pop("per_run"))
    verdict = ("PASS" if not checked["problems"] and not checked["foreign_frames"] and not closed
               and checked["runs"] > 0 else "FAIL")
    result = {
        "verdict": verdict, "users": args.users, "agent": args.agent, "url": url if args.url else
        "runlane up (started by the test)", "concurrency": args.concurrency,
        "connect_seconds": round(connect_seconds, 1), "machine": machine(),
        "load_average": {"before": load_before, "after": load_average()},
        "runs_accepted": checked["runs"], "runs_complete_in_order": checked["complete_in_order"],
        "foreign_frames": len(checked["foreign_frames"]), "sockets_closed": len(closed),
        "closed_examples": dict(list(closed.items())[:10]),
        "problems": dict(list(checked["problems"].items())[:50]), "steps": figures,
    }
    print(f"load average {result['load_average']['before']} -> {result['load_average']['after']}")
    print_table(["offered/s", "submitted/s", "completed/s", "rejected",
                 "202 p50", "started p50", "p95", "p99", "completed p50", "p95", "p99"],
                [[f["offered_per_s"], f["submitted_per_s"], f["completed_per_s"], f["rejected"],
                  f["submit_to_202_ms"]["p50"], *f["submit_to_started_ms"].values(),
                  *f["submit_to_completed_ms"].values()] for f in figures])
    print(f"runs accepted {checked['runs']}, "
          f"complete and in order {checked['complete_in_order']}, "
          f"foreign frames {len(checked['foreign_frames'])}, "
          f"sockets closed {len(closed)}: {verdict}")
    if not args.no_chart:
        chart(figures, Path(args.chart),
              f"Runlane, {args.users} users, {args.agent}; {machine()['cpus']} cores, "
              f"load avg {result['load_average']['before']}")
        print(f"chart: {args.chart}")
    print(f"wrote {write_result(args.out, result)}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())

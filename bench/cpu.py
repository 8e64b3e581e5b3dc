"""CPU time per `echo` run of each process on its way, Runlane next to the floor and the glue.

    python bench/cpu.py [--runs 2000] [--floor-transport kombu|runlane]

One deployment as `bench/e2e.py` builds it (`runlane web` under gunicorn + gevent, a Runlane
worker and a bare worker, each `-P prefork -c 1`, the glue's bare Flask route, embedded Redis,
SQLite) and its probes, one run in flight, back to back. For each side, the CPU time (user +
system, `/proc/<pid>/stat`) each process spent, divided by the runs: the web process (the
gunicorn worker), the Celery worker's main process, its prefork child, Redis and this client.

Why: on a 2-core machine CPU spent anywhere, even after a run's last event, delays the next
run's way through the same cores; the last row (CPU per run over wall time per run) says how
much of the machine one run at a time keeps busy. Linux only. Writes bench/results/cpu.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Deployment,
    children,
    load_average,
    machine,
    print_table,
    start_bare_web,
    start_worker,
    stop_group,
    stop_on_sigterm,
    write_result,
)

TICKS = os.sysconf("SC_CLK_TCK")
ROLES = ("web", "worker main", "prefork child", "redis", "client")


def cpu_seconds(pid: int) -> float:
    """User + system time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(one: Callable[[int], None], pids: dict[str, int], runs: int,
            warmup: int) -> dict[str, float]:
    """µs of CPU per run by role (`client`: this process), and the wall ms per run."""
    for n in range(warmup):
        one(n)
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    mine, started = os.times(), time.perf_counter()
    for n in range(runs):
        one(warmup + n)
    wall = time.perf_counter() - started
    after, done = {role: cpu_seconds(pid) for role, pid in pids.items()}, os.times()
    out = {role: round((after[role] - before[role]) / runs * 1e6) for role in pids}
    out["client"] = round(((done.user + done.system) - (mine.user + mine.system)) / runs * 1e6)
    out["wall_ms"] = round(wall / runs * 1000, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="measured runs per side")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--floor-transport", choices=["kombu", "runlane"], default="kombu",
                        help="the bare worker's and the glue's Redis transport (see e2e.py)")
    args = parser.parse_args()
    os.environ["BARE_CELERY_TRANSPORT"] = args.floor_transport  # before bare_celery is imported
    stop_on_sigterm()
    import e2e

    load_before = load_average()
    dep = Deployment({"RUNLANE_SUBMIT_RATE_PER_MINUTE": "100000000"})
    processes: list[Any] = []
    sides: dict[str, dict[str, float]] = {}
    try:
        glue_web, glue_port = start_bare_web(dep.env, dep.workdir / "glue-web.log")
        processes.append(glue_web)
        runlane_worker = start_worker(dep.env, dep.workdir / "worker.log", app="tasks",
                                      queue="runlane", name="runlane")
        processes.append(runlane_worker)
        bare_worker = start_worker(dep.env, dep.workdir / "bare.log", app="bare_celery",
                                   queue="bare", name="bare")
        processes.append(bare_worker)
        assert dep.redis.process is not None
        redis_pid = dep.redis.process.pid

        def pids(web: int | None, worker: int) -> dict[str, int]:
            found = {"worker main": worker, "prefork child": children(worker)[0],
                     "redis": redis_pid}
            return {"web": web, **found} if web is not None else found

        # Each side gets fresh connections right before it is measured: an HTTP keep-alive
        # connection left idle while another side runs is closed by the server.
        probe: Any = e2e.RunlaneProbe(dep.port, dep.token("cpu-user"), thread_per_run=False)
        try:
            sides["runlane"] = measure(probe.one, pids(dep.worker_pid(), runlane_worker.pid),
                                       args.runs, args.warmup)
        finally:
            probe.close()
        probe = e2e.CeleryFloor(dep.redis.url)
        try:
            sides["floor"] = measure(probe.one, pids(None, bare_worker.pid), args.runs,
                                     args.warmup)
        finally:
            probe.close()
        probe = e2e.GlueReference(glue_port, dep.redis.url)
        try:
            sides["glue"] = measure(probe.one, pids(children(glue_web.pid)[0], bare_worker.pid),
                                    args.runs, args.warmup)
        finally:
            probe.close()
    finally:
        for process in processes:
            stop_group(process)
        dep.close()

    rows: list[list[object]] = [[role, *(side.get(role, "") for side in sides.values())]
                                for role in ROLES]
    totals = {name: sum(v for k, v in side.items() if k in ROLES) for name, side in sides.items()}
    rows.append(["total CPU", *totals.values()])
    rows.append(["wall per run (µs)", *(round(s["wall_ms"] * 1000) for s in sides.values())])
    rows.append(["cores busy (CPU / wall)",
                 *(round(totals[name] / (s["wall_ms"] * 1000), 2) for name, s in sides.items())])
    print(f"echo, {args.runs} runs per side, one in flight; the floor and the glue on "
          f"{args.floor_transport}'s Redis transport; load average {load_before} -> "
          f"{load_average()}")
    print_table(["µs of CPU per run", *sides], rows)
    result = {"machine": machine(), "runs": args.runs, "floor_transport": args.floor_transport,
              "cpu_us_per_run": sides, "load_average": {"before": load_before,
                                                        "after": load_average()}}
    print(f"wrote {write_result('cpu', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

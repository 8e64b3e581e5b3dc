"""Per-run cost of Runlane's own objects, measured in-process (no Celery, no HTTP).

    python bench/overhead.py [--runs 2000] [--profile]

1. The factories, each timed alone over many iterations: building the context (web side),
   signing it, verifying it (worker side), the agent, the bridge, the run control and the
   engine.
2. The worker's task body for `echo`, stage by stage, against a real SQLite file and a real
   (embedded) Redis, the same calls `tasks/run.py` makes, in its order: verify, the claim
   with `agent_started` logged in its transaction, publishing it, the other factories,
   `engine.run()` (the agent, then `agent_completed` logged with the terminal status and
   published), nudge.
   This puts the factories in proportion to what a run costs once the message arrived.

`--profile` also runs the task bodies under pyinstrument (`pip install pyinstrument`) and
prints where the time goes. Writes bench/results/overhead.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import (  # noqa: E402
    SECRET,
    load_average,
    machine,
    print_table,
    stop_on_sigterm,
    write_result,
)


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    """Mean microseconds per call over `n` calls (after a short warm-up)."""
    for _ in range(min(100, n)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="task bodies to run")
    parser.add_argument("--iterations", type=int, default=20000, help="calls per factory")
    parser.add_argument("--profile", action="store_true", help="pyinstrument the task bodies")
    args = parser.parse_args()
    stop_on_sigterm()
    load_before = load_average()

    from runlane.embedded import EmbeddedRedis

    workdir = Path(tempfile.mkdtemp(prefix="runlane-overhead-"))
    redis_server = EmbeddedRedis(workdir / "redis")
    redis_server.start()
    try:
        database_url = f"sqlite:///{workdir / 'overhead.db'}"
        os.environ.update({"REDIS_URL": redis_server.url, "DATABASE_URL": database_url,
                           "RUNLANE_SECRET_KEY": SECRET, "RUNLANE_INSTANCE_PATH": str(workdir)})
        result = measure(args, database_url)
    finally:
        redis_server.stop()
    result.update(machine=machine(), load_average={"before": load_before, "after": load_average()})
    print(f"load average {result['load_average']['before']} -> {result['load_average']['after']}")
    print_table(["factory (in-process)", "us per call"],
                [[k, v] for k, v in result["factories_us"].items()])
    print()
    print_table(["echo task body stage", "p50 us", "mean us", "share of body"],
                [[k, v["p50"], v["mean"], f"{v['share']:.1%}"]
                 for k, v in result["task_body_us"].items()])
    print(f"\nfactories per run: {result['factories_per_run_us']} us = "
          f"{result['factories_share_of_body']:.1%} of the task body")
    print(f"wrote {write_result('overhead', result)}")
    return 0


def measure(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    from domain.context import UserExecutionContext
    from domain.events import EventType
    from runlane.settings import load
    from storage.db import migrate
    from storage.runstate import Claim, RunStates
    from tasks import worker
    from tasks.engine import started_data
    from tasks.lifecycle import RunControl

    migrate(database_url)
    settings = load()
    runtime = worker.install(settings)
    signer = runtime.signer
    limits = runtime.agents.limits("echo")

    def new_context(user: str = "overhead-user", thread: str = "t") -> UserExecutionContext:
        return UserExecutionContext(
            user_id=user, thread_id=thread, run_id=uuid.uuid4().hex,
            request_id=uuid.uuid4().hex, agent="echo", input={"n": 1},
            created_at=datetime.now(UTC), limits=limits)

    ctx = new_context()
    signed = signer.sign(ctx)
    control_args = {"db": runtime.db, "ctx": ctx, "attempt": 1, "heartbeat_interval": 2.0,
                    "cancel_grace": 5.0, "can_terminate": False}
    bridge = runtime.bridges.create(ctx, 1)
    agent = runtime.agents.create(ctx)
    n = args.iterations
    factories = {
        "context: build (web)": per_call_us(new_context, n),
        "context: sign (web)": per_call_us(lambda: signer.sign(ctx), n),
        "context: verify (worker)": per_call_us(lambda: signer.verify(signed), n),
        "agent: AgentInstanceFactory.create": per_call_us(lambda: runtime.agents.create(ctx), n),
        "bridge: WebSocketBridgeFactory.create": per_call_us(
            lambda: runtime.bridges.create(ctx, 1), n),
        "control: RunControl(...)": per_call_us(
            lambda: RunControl(bridge=bridge, **control_args), n),  # type: ignore[arg-type]
        "engine: ExecutionEngineFactory.create": per_call_us(
            lambda: runtime.engines.create(ctx, agent, bridge, None), n),
    }
    factories = {k: round(v, 2) for k, v in factories.items()}

    # The task body, stage by stage (tasks/run.py without Celery around it).
    stages: dict[str, list[float]] = {s: [] for s in
                                      ("verify", "claim + agent_started logged",
                                       "bridge + publish agent_started", "factories",
                                       "engine.run (echo, terminal txn, publish)", "nudge")}
    messages = []
    for i in range(args.runs + 50):
        run_ctx = new_context(user=f"overhead-{i}")  # nobody waits behind it: nudge finds none
        with runtime.db.session() as session:
            RunStates.create(session, run_ctx.user_id, run_id=run_ctx.run_id,
                             thread_id=run_ctx.thread_id, agent="echo", input=run_ctx.input,
                             metadata={}, request_id=run_ctx.request_id,
                             created_at=run_ctx.created_at)
        messages.append(signer.sign(run_ctx))

    def body(message: str, record: bool) -> None:
        # The calls tasks/run.py makes, in its order, with a mark between the stages.
        marks = [time.perf_counter()]
        run_ctx = signer.verify(message)
        marks.append(time.perf_counter())
        claim, attempt, started = runtime.states.claim(
            run_ctx.user_id, run_ctx.run_id, run_ctx.thread_id, dispatch=1,
            max_running=settings.max_running_per_user, lease_seconds=settings.heartbeat_interval,
            hard_limit=run_ctx.limits.hard_time_limit, started_type=EventType.AGENT_STARTED.value,
            started_data=lambda attempt: started_data(run_ctx, attempt))
        assert claim is Claim.CLAIMED and started is not None, claim
        marks.append(time.perf_counter())
        run_bridge = runtime.bridges.create(run_ctx, attempt)
        run_bridge.announce(started)
        marks.append(time.perf_counter())
        run_agent = runtime.agents.create(run_ctx)
        control = RunControl(db=runtime.db, ctx=run_ctx, attempt=attempt, bridge=run_bridge,
                             watchdogs=runtime.watchdogs,
                             heartbeat_interval=settings.heartbeat_interval,
                             cancel_grace=settings.cancel_grace, can_terminate=False)
        engine = runtime.engines.create(run_ctx, run_agent, run_bridge, control)
        marks.append(time.perf_counter())
        with control.watching():
            outcome = engine.run(started=started)
        assert outcome.status is not None and outcome.status.value == "completed", outcome
        marks.append(time.perf_counter())
        runtime.dispatcher.nudge(run_ctx.user_id)
        marks.append(time.perf_counter())
        if record:
            # One mark more than there are stages: each stage lies between two marks.
            for stage, a, b in zip(stages, marks, marks[1:], strict=False):
                stages[stage].append((b - a) * 1e6)

    for message in messages[:50]:
        body(message, record=False)
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        profiler.start()
    for message in messages[50:]:
        body(message, record=True)
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    runtime.close()

    total = sum(sum(v) for v in stages.values())
    task_body = {
        stage: {"p50": round(sorted(v)[len(v) // 2], 1), "mean": round(sum(v) / len(v), 1),
                "share": sum(v) / total}
        for stage, v in stages.items()
    }
    per_body = sorted(map(sum, zip(*stages.values(), strict=True)))  # each run: its stages summed
    task_body["total"] = {"p50": round(per_body[args.runs // 2], 1),
                          "mean": round(total / args.runs, 1), "share": 1.0}
    per_run = round(factories["context: verify (worker)"]
                    + sum(v for k, v in factories.items() if not k.startswith("context")), 1)
    return {"runs": args.runs, "iterations": n, "factories_us": factories,
            "task_body_us": task_body, "factories_per_run_us": per_run,
            "factories_share_of_body": per_run / task_body["total"]["mean"]}


if __name__ == "__main__":
    sys.exit(main())

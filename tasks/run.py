"""execute_run: the one Celery task. It receives a signed context and a dispatch token."""
from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task

from domain.context import UserExecutionContext
from domain.errors import ContextTampered, MalformedContext, UnprocessableInput
from domain.events import EventType
from factories.context import claimed_run_id
from runlane import logs, metrics
from storage.runstate import Claim
from tasks import worker
from tasks.engine import started_data
from tasks.lifecycle import RunControl

log = logging.getLogger(__name__)


@shared_task(bind=True, name="runlane.execute_run", ignore_result=True, max_retries=None)
def execute_run(self: Any, signed_context: str, dispatch: int | None = None) -> str:
    """Verify the context, claim the run, build fresh agent/bridge/engine, run to the end."""
    runtime = worker.current()
    try:
        ctx = runtime.signer.verify(signed_context)
    except (ContextTampered, MalformedContext) as exc:
        run_id = claimed_run_id(signed_context)
        log.error("refused a task message naming run %s: %s", run_id, exc)
        if run_id is not None:
            runtime.refuse(run_id, "refused a task message that failed verification")
        return "refused"
    # Every line logged about this run, here and below, carries its ids (never its input).
    with logs.bound(run_id=ctx.run_id, user_id=ctx.user_id, request_id=ctx.request_id):
        return _execute(self, runtime, ctx, dispatch)


def _execute(
    self: Any, runtime: worker.WorkerRuntime, ctx: UserExecutionContext, dispatch: int | None
) -> str:
    settings = runtime.settings
    # The claim and the run's agent_started share one transaction (one commit fewer before
    # the first event); the event is published as soon as that commits.
    claim, attempt, started_event = runtime.states.claim(
        ctx.user_id, ctx.run_id, ctx.thread_id, dispatch=dispatch,
        max_running=settings.max_running_per_user, lease_seconds=settings.heartbeat_interval,
        hard_limit=ctx.limits.hard_time_limit, started_type=EventType.AGENT_STARTED.value,
        started_data=lambda attempt: started_data(ctx, attempt),
    )
    if claim is Claim.STALE:
        log.info("run %s: message %s is stale (duplicate, cancelled or re-sent); dropped",
                 ctx.run_id, dispatch)
        return "stale"
    if claim is Claim.BLOCKED:
        # Step aside so other users' runs use this worker; a finishing run nudges us sooner.
        countdown = min(0.25 * 2 ** self.request.retries, 5.0)
        log.info("run %s waits: its owner is at the running limit or its thread is busy; "
                 "retry in %.2fs", ctx.run_id, countdown)
        raise self.retry(countdown=countdown)

    assert started_event is not None  # logged with every successful claim
    # From here to the terminal event only what the run needs (and its start line): the
    # factories' timings and the queue wait are recorded after it ends (observing them first
    # put their cost between `agent_started` and `agent_completed`; docs/benchmarks.md).
    clock = time.perf_counter
    t0 = clock()
    bridge = runtime.bridges.create(ctx, attempt)
    builds = {"bridge": clock() - t0}
    bridge.announce(started_event)
    metrics.run_status("running", ctx.agent)
    log.info("run started: agent %s, attempt %d", ctx.agent, attempt)
    started = time.monotonic()
    t0 = clock()
    try:
        agent = runtime.agents.create(ctx)
    except UnprocessableInput:  # validated by the web, but this worker lacks the agent
        agent = None  # the engine ends such a run as failed
    builds["agent"] = clock() - t0
    control = RunControl(
        db=runtime.db, ctx=ctx, attempt=attempt, bridge=bridge,
        heartbeat_interval=settings.heartbeat_interval, cancel_grace=settings.cancel_grace,
        can_terminate=runtime.can_terminate, watchdogs=runtime.watchdogs,
    )
    t0 = clock()
    engine = runtime.engines.create(ctx, agent, bridge, control)
    builds["engine"] = clock() - t0
    with control.watching():
        outcome = engine.run(started=started_event)
    status = outcome.status.value if outcome.status else "superseded"
    elapsed = time.monotonic() - started
    for factory, seconds in builds.items():
        metrics.FACTORY_BUILD.labels(factory=factory).observe(seconds)
    if attempt == 1:
        metrics.QUEUE_WAIT.labels(agent=ctx.agent).observe(
            max(0.0, (started_event.ts - ctx.created_at).total_seconds()))
    metrics.RUN_DURATION.labels(agent=ctx.agent, status=status).observe(elapsed)
    log.info("run ended %s after %.3fs", status, elapsed)
    runtime.dispatcher.nudge(ctx.user_id)
    return status

"""execute_run: the one Celery task. It receives a signed context and a dispatch token."""
from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from factories.context import claimed_run_id, verify_context
from runlane.errors import ContextTampered, MalformedContext, UnprocessableInput
from storage import queries
from storage.queries import Claim
from tasks import worker
from tasks.lifecycle import RunControl

log = logging.getLogger(__name__)


@shared_task(bind=True, name="runlane.execute_run", ignore_result=True, max_retries=None)
def execute_run(self: Any, signed_context: str, dispatch: int | None = None) -> str:
    """Verify the context, claim the run, build fresh agent/bridge/engine, run to the end."""
    runtime = worker.current()
    try:
        ctx = verify_context(signed_context, runtime.signing_key)
    except (ContextTampered, MalformedContext) as exc:
        run_id = claimed_run_id(signed_context)
        log.error("refused a task message naming run %s: %s", run_id, exc)
        if run_id is not None:
            runtime.refuse(run_id, "refused a task message that failed verification")
        return "refused"

    settings = runtime.settings
    with runtime.db.session() as session:
        claim, attempt = queries.claim_run(
            session, ctx.user_id, ctx.run_id, dispatch=dispatch,
            max_running=settings.max_running_per_user, lease_seconds=settings.heartbeat_interval,
            hard_limit=ctx.limits.hard_time_limit,
        )
    if claim is Claim.STALE:
        log.info("run %s: message %s is stale (duplicate, cancelled or re-sent); dropped",
                 ctx.run_id, dispatch)
        return "stale"
    if claim is Claim.BLOCKED:
        # Step aside so other users' runs use this worker; a finishing run nudges us sooner.
        raise self.retry(countdown=min(0.25 * 2 ** self.request.retries, 5.0))

    bridge = runtime.bridges.create(ctx, attempt)
    try:
        agent = runtime.agents.create(ctx)
    except UnprocessableInput:  # validated by the web, but this worker lacks the agent
        agent = None  # the engine ends such a run as failed
    control = RunControl(
        db=runtime.db, ctx=ctx, attempt=attempt, bridge=bridge,
        heartbeat_interval=settings.heartbeat_interval, cancel_grace=settings.cancel_grace,
        can_terminate=runtime.can_terminate,
    )
    engine = runtime.engines.create(ctx, agent, bridge, control)
    with control.watching():
        outcome = engine.run()
    runtime.dispatcher.nudge(ctx.user_id)
    return outcome.status.value if outcome.status else "superseded"

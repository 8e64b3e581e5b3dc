"""execute_run: the one Celery task. It receives a signed context and nothing else."""
from __future__ import annotations

import logging

from celery import shared_task

from factories.context import verify_context
from runlane.errors import ContextTampered, MalformedContext, UnprocessableInput
from storage import queries
from tasks import worker

log = logging.getLogger(__name__)


@shared_task(name="runlane.execute_run", ignore_result=True)
def execute_run(signed_context: str) -> str:
    """Verify the context, claim the run, build fresh agent/bridge/engine, run to the end."""
    runtime = worker.current()
    try:
        ctx = verify_context(signed_context, runtime.signing_key)
    except (ContextTampered, MalformedContext) as exc:
        log.error("refused a task message: %s", exc)
        return "refused"

    with runtime.db.session() as session:
        if not queries.claim_run(session, ctx.user_id, ctx.run_id):
            log.info("run %s is not queued (duplicate delivery or cancelled); skipped", ctx.run_id)
            return "skipped"

    bridge = runtime.bridges.create(ctx)
    try:
        agent = runtime.agents.create(ctx)
    except UnprocessableInput:  # validated by the web, but this worker lacks the agent
        agent = None  # the engine ends such a run as failed
    engine = runtime.engines.create(ctx, agent, bridge)
    return engine.run().status.value

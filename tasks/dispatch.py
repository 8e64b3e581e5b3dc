"""Dispatcher: the one place a run becomes a task message (first send, re-sends, nudges).

Every message carries the run's dispatch token; sending again bumps the token, so older
copies of the message (broker redeliveries, retries, sweeps) are dropped when they arrive.

Messages are sent by task name: the web process builds a Dispatcher too, and must not import
the task's module (tasks.run imports the worker's runtime, which imports this module).
"""
from __future__ import annotations

import logging
from typing import Any

from domain.context import UserExecutionContext
from factories.agents import AgentInstanceFactory
from factories.context import ContextSigner
from storage import queries
from storage.db import Database
from storage.models import Run
from tasks import app

log = logging.getLogger(__name__)

# The name tasks/run.py registers `execute_run` under; a unit test keeps the two equal.
EXECUTE_RUN = "runlane.execute_run"


class Dispatcher:
    def __init__(
        self, *, db: Database, signer: ContextSigner, agents: AgentInstanceFactory,
        queues: dict[str, str], default_queue: str,
    ) -> None:
        self._db = db
        self._signer = signer
        self._agents = agents
        self._queues = queues
        self._default_queue = default_queue
        self._declared: set[str] = set()  # queues a send of this process has declared

    def queue_for(self, agent: str) -> str:
        return self._queues.get(agent, self._default_queue)

    def context_for(self, run: Run) -> UserExecutionContext:
        """The context a stored run stands for (re-sends need it; nothing else is trusted)."""
        return UserExecutionContext(
            user_id=run.owner_id, thread_id=run.thread_id, run_id=run.id,
            request_id=run.request_id, agent=run.agent, input=run.input,
            created_at=run.created_at, limits=self._agents.limits(run.agent),
        )

    def send(self, ctx: UserExecutionContext, dispatch: int) -> None:
        """Send one task message; time limits ride along for the prefork pool to enforce."""
        queue = self.queue_for(ctx.agent)
        # kombu re-checks a queue's declaration on every publish (it copies the queue and its
        # exchange to bind them, a visible share of each send; docs/benchmarks.md). Once a
        # send from this process has declared the queue (workers declare theirs too, and
        # Celery's queues are durable), the later ones skip the check.
        declare: dict[str, Any] = {"declare": []} if queue in self._declared else {}
        app.send_task(
            EXECUTE_RUN,
            args=[self._signer.sign(ctx), dispatch],
            task_id=f"{ctx.run_id}-{dispatch}",
            queue=queue,
            # celery-types says int; Celery takes (and the pool enforces) float seconds.
            soft_time_limit=ctx.limits.soft_time_limit,  # type: ignore[arg-type]
            time_limit=ctx.limits.hard_time_limit,  # type: ignore[arg-type]
            # What Flower and task events show of the arguments: the run, never the context
            # (it carries the agent's input). Given here, Celery also skips repr()-ing it.
            argsrepr=f"('<context of run {ctx.run_id}>', {dispatch})", kwargsrepr="{}",
            **declare,
            # What the task object's apply_async added from its own options: the task is
            # declared with ignore_result=True, and send_task does not look that up.
            ignore_result=True,
        )
        self._declared.add(queue)

    def redispatch(self, owner_id: str, run_id: str) -> bool:
        """Send a waiting run again with a new token; False when it is no longer waiting."""
        with self._db.session() as session:
            token = queries.bump_dispatch(session, owner_id, run_id)
            run = queries.get_run(session, owner_id, run_id) if token else None
        if token is None or run is None:
            return False
        try:
            self.send(self.context_for(run), token)
        except Exception:  # broker down: the sweeper tries again later
            log.warning("could not re-send run %s", run_id, exc_info=True)
            return False
        return True

    def nudge(self, owner_id: str, limit: int = 4) -> None:
        """Re-send the owner's oldest blocked runs now that a slot may be free. Only blocked
        ones: re-sending a run whose message is still queued would only make that message
        stale, one more message for a worker to drop per run."""
        with self._db.transaction() as connection:  # on every run's way out: no ORM session
            waiting = queries.next_blocked(connection, owner_id, limit)
        for run_id in waiting:
            self.redispatch(owner_id, run_id)

"""The worker process's runtime: DB engine, publisher and factories, built in Celery's hooks.

Process-wide and connection-only: nothing here holds data of a user or a run.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from celery import signals

from agents.tools import default_tools
from domain.errors import RunlaneError
from domain.events import EventType
from domain.status import RunStatus
from events.eventlog import EventLog
from events.transport import RedisPublisher
from factories import (
    AgentInstanceFactory,
    ContextSigner,
    ExecutionEngineFactory,
    WebSocketBridgeFactory,
)
from runlane import logs, metrics
from runlane.settings import Settings, load
from storage import queries
from storage.db import Database
from storage.runstate import RunStates
from storage.schema import require_current_schema
from tasks.dispatch import Dispatcher
from tasks.engine import ExecutionEngine
from tasks.lifecycle import Watchdog
from tasks.reaper import Reaper

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    settings: Settings
    signer: ContextSigner  # verifies this process's task messages
    db: Database
    events: EventLog
    states: RunStates  # the one writer of a run's status
    publisher: RedisPublisher
    agents: AgentInstanceFactory
    bridges: WebSocketBridgeFactory
    engines: ExecutionEngineFactory[ExecutionEngine]
    dispatcher: Dispatcher
    can_terminate: bool = False  # True only in a prefork child, which may end itself
    reaper: Reaper | None = None
    watchdogs: Watchdog = field(default_factory=Watchdog)  # this process's ticker

    @classmethod
    def build(cls, settings: Settings, *, can_terminate: bool = False) -> WorkerRuntime:
        db = Database(settings.resolved_database_url(), direct_sql=settings.direct_sql)
        publisher = RedisPublisher.from_url(settings.require_redis_url())
        events = EventLog(db)
        agents = AgentInstanceFactory.from_settings(settings)
        signer = ContextSigner(settings.context_signing_key())
        return cls(
            settings=settings,
            signer=signer,
            db=db,
            events=events,
            states=RunStates(db),
            publisher=publisher,
            agents=agents,
            bridges=WebSocketBridgeFactory(
                log=events, publisher=publisher, channel_prefix=settings.channel_prefix
            ),
            engines=ExecutionEngineFactory(engine=ExecutionEngine, tools=default_tools()),
            dispatcher=Dispatcher(db=db, signer=signer, agents=agents,
                                  queues=settings.agent_queues,
                                  default_queue=settings.default_queue),
            can_terminate=can_terminate,
        )

    def refuse(self, run_id: str, reason: str) -> None:
        """End a run named by a forged or malformed message as failed, for its real owner
        (looked up by id; nothing from the message is trusted). It is never executed."""
        with self.db.session() as session:
            run = queries.get_run_any_owner(session, run_id)
        if run is None:
            return
        event = self.states.refuse(run.owner_id, run.id, run.thread_id,
                                   event_type=EventType.AGENT_FAILED.value,
                                   data={"error": reason}, error=reason)
        if event is not None:
            self.bridges.for_run(run.owner_id, run.id, run.thread_id,
                                 agent=run.agent).announce_change(event, RunStatus.FAILED)

    def start_reaper(self) -> None:
        """Once per process: a second reaper thread would only double the database work."""
        if self.reaper is not None and self.reaper.running:
            return
        self.reaper = Reaper(db=self.db, settings=self.settings, dispatcher=self.dispatcher,
                             bridges=self.bridges)
        self.reaper.start()

    def close(self) -> None:
        if self.reaper is not None:
            self.reaper.stop()
        self.db.dispose()
        self.publisher.close()


class _Holder:
    runtime: WorkerRuntime | None = None


def current() -> WorkerRuntime:
    """The runtime of this worker process.

    Raises:
        RuntimeError: the process is not a Celery worker started through its hooks.
    """
    if _Holder.runtime is None:
        raise RuntimeError("no worker runtime: start the worker with `celery -A tasks worker`")
    return _Holder.runtime


def install(settings: Settings | None = None, *, can_terminate: bool = False) -> WorkerRuntime:
    _Holder.runtime = WorkerRuntime.build(settings or load(), can_terminate=can_terminate)
    return _Holder.runtime


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    # Engines and pools connect lazily, so building here (before a prefork fork) opens nothing.
    settings = load()
    try:
        settings.require_redis_url()
        require_current_schema(settings.resolved_database_url(),
                               auto_migrate=settings.auto_migrate)
    except RunlaneError as exc:  # Celery logs and swallows an Exception here; not SystemExit
        print(f"runlane worker: {exc.detail}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    install(settings)


@signals.worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    # The main process reaps (prefork children do not inherit its threads).
    runtime = current()
    runtime.start_reaper()
    if runtime.settings.worker_metrics_port:  # a fleet host's own scrape target
        metrics.start_exporter(runtime.settings.worker_metrics_port)


@signals.worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    # A forked child must not share the parent's sockets: drop them unclosed, build anew.
    if _Holder.runtime is not None:
        _Holder.runtime.db.dispose(close=False)
    # Only a prefork child may end itself to stop an agent; the solo pool runs in the main one.
    install(can_terminate=multiprocessing.parent_process() is not None)


@signals.worker_process_shutdown.connect
def _on_worker_process_shutdown(**_: Any) -> None:
    metrics.mark_process_dead(os.getpid())


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _on_setup_logger(logger: logging.Logger, **_: Any) -> None:
    # Celery's handlers keep their streams; they take Runlane's format and the run's ids.
    settings = load()
    for handler in logger.handlers:
        logs.adopt(handler, settings)
    logs.quiet_celery_task_lines(settings)


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    runtime, _Holder.runtime = _Holder.runtime, None
    if runtime is not None:
        runtime.close()

"""The worker process's runtime: DB engine, publisher and factories, built in Celery's hooks.

Process-wide and connection-only: nothing here holds data of a user or a run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery import signals

from agents.registry import default_registry
from agents.tools import default_tools
from events.eventlog import EventLog
from events.transport import RedisPublisher
from factories import (
    AgentInstanceFactory,
    ExecutionEngineFactory,
    WebSocketBridgeFactory,
)
from runlane.settings import Settings, load
from storage.db import Database

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    settings: Settings
    signing_key: bytes
    db: Database
    events: EventLog
    publisher: RedisPublisher
    agents: AgentInstanceFactory
    bridges: WebSocketBridgeFactory
    engines: ExecutionEngineFactory

    @classmethod
    def build(cls, settings: Settings) -> "WorkerRuntime":
        db = Database(settings.resolved_database_url())
        publisher = RedisPublisher.from_url(settings.require_redis_url())
        events = EventLog(db)
        return cls(
            settings=settings,
            signing_key=settings.context_signing_key(),
            db=db,
            events=events,
            publisher=publisher,
            agents=AgentInstanceFactory(default_registry()),
            bridges=WebSocketBridgeFactory(
                log=events, publisher=publisher, channel_prefix=settings.channel_prefix
            ),
            engines=ExecutionEngineFactory(db=db, tools=default_tools()),
        )

    def close(self) -> None:
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


def install(settings: Settings | None = None) -> WorkerRuntime:
    _Holder.runtime = WorkerRuntime.build(settings or load())
    return _Holder.runtime


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    # Engines and pools connect lazily, so building here (before a prefork fork) opens nothing.
    install()


@signals.worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    # A forked child must not share the parent's sockets: drop them unclosed, build anew.
    if _Holder.runtime is not None:
        _Holder.runtime.db.dispose(close=False)
    install()


@signals.worker_shutdown.connect
@signals.worker_process_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    runtime, _Holder.runtime = _Holder.runtime, None
    if runtime is not None:
        runtime.close()

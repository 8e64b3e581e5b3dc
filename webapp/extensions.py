"""Process-wide web objects (connections and routing tables only), reached via the app."""
from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app
from flask_sock import Sock

from agents.registry import AgentRegistry, default_registry
from events.eventlog import EventLog
from events.router import SocketRouter
from factories.adapter import FactoryAdapter
from runlane.settings import Settings
from storage.db import Database
from webapp.runs import RunService, celery_enqueue
from webapp.streams import RunWatch

sock = Sock()


@dataclass
class WebState:
    """What one web process shares across requests; built by create_app, never at import."""

    settings: Settings
    jwt_secret: str
    db: Database
    router: SocketRouter
    agents: AgentRegistry
    events: EventLog
    runs: RunService
    adapter: FactoryAdapter
    redis: redis.Redis

    @classmethod
    def build(cls, settings: Settings) -> "WebState":
        db = Database(settings.resolved_database_url())
        agents = default_registry()
        runs = RunService(
            db=db, agents=agents, signing_key=settings.context_signing_key(),
            enqueue=celery_enqueue,
        )
        return cls(
            settings=settings,
            jwt_secret=settings.jwt_secret(),
            db=db,
            router=SocketRouter(settings.require_redis_url(), prefix=settings.channel_prefix),
            agents=agents,
            events=EventLog(db),
            runs=runs,
            adapter=FactoryAdapter(
                registry=agents, service=runs, default_agent=settings.v1_default_agent
            ),
            redis=redis.Redis.from_url(
                settings.require_redis_url(), socket_timeout=2, socket_connect_timeout=2
            ),
        )

    def watch(self, user_id: str, run_id: str, after_seq: int = 0) -> "RunWatch":
        """A RunWatch of one of `user_id`'s runs (use as a context manager)."""
        return RunWatch(router=self.router, log=self.events, user_id=user_id, run_id=run_id,
                        after_seq=after_seq, queue_size=self.settings.socket_queue_size)

    def close(self) -> None:
        self.router.stop()
        self.db.dispose()
        self.redis.close()


def state() -> WebState:
    """The WebState of the app handling the current request."""
    return current_app.extensions["runlane"]  # type: ignore[no-any-return]

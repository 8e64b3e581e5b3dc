"""Process-wide web objects (connections and routing tables only), reached via the app."""
from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app
from flask_sock import Sock

from agents.registry import AgentRegistry
from events.eventlog import EventLog
from events.router import SocketRouter
from events.transport import RedisPublisher
from factories.adapter import FactoryAdapter
from factories.agents import AgentInstanceFactory
from factories.bridge import WebSocketBridgeFactory
from factories.context import ContextSigner
from runlane.settings import Settings
from runlane.tokens import TokenVerifier
from storage.db import Database
from tasks.dispatch import Dispatcher
from webapp.runs import RunService
from webapp.streams import RunWatch

sock = Sock()  # unbound; routes register on blueprints with bp= (see webapp/sockets.py)


@dataclass
class WebState:
    """What one web process shares across requests; built by create_app, never at import."""

    settings: Settings
    tokens: TokenVerifier
    db: Database
    router: SocketRouter
    agents: AgentRegistry
    agent_factory: AgentInstanceFactory
    events: EventLog
    runs: RunService
    adapter: FactoryAdapter
    redis: redis.Redis

    @classmethod
    def build(cls, settings: Settings) -> WebState:
        db = Database(settings.resolved_database_url(), direct_sql=settings.direct_sql)
        agent_factory = AgentInstanceFactory.from_settings(settings)
        agents = agent_factory.registry
        client = redis.Redis.from_url(
            settings.require_redis_url(), socket_timeout=2, socket_connect_timeout=2
        )
        events = EventLog(db)
        bridges = WebSocketBridgeFactory(log=events, publisher=RedisPublisher(client),
                                         channel_prefix=settings.channel_prefix)
        dispatcher = Dispatcher(db=db, signer=ContextSigner(settings.context_signing_key()),
                                agents=agent_factory, queues=settings.agent_queues,
                                default_queue=settings.default_queue)
        runs = RunService(db=db, agents=agents, dispatcher=dispatcher, bridges=bridges,
                          max_queued=settings.max_queued_per_user)
        return cls(
            settings=settings,
            tokens=TokenVerifier(settings),
            db=db,
            # The router's ticker drives the sockets' keep-alive pings (one timer per process)
            # and the tail check that finds events whose publish was lost.
            router=SocketRouter(settings.require_redis_url(), prefix=settings.channel_prefix,
                                tick_interval=settings.socket_ping_interval or None,
                                cursors=events.last_cursors),
            agents=agents,
            agent_factory=agent_factory,
            events=events,
            runs=runs,
            adapter=FactoryAdapter(
                agents=agent_factory, service=runs, default_agent=settings.v1_default_agent
            ),
            redis=client,
        )

    def watch(self, user_id: str, run_id: str, after_seq: int = 0) -> RunWatch:
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

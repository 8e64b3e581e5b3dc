"""Process-wide web objects (connections and routing tables only), reached via the app."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from flask_sock import Sock

from agents.registry import AgentRegistry, default_registry
from events.router import SocketRouter
from runlane.settings import Settings
from storage.db import Database
from webapp.runs import RunService, celery_enqueue

sock = Sock()


@dataclass
class WebState:
    """What one web process shares across requests; built by create_app, never at import."""

    settings: Settings
    jwt_secret: str
    db: Database
    router: SocketRouter
    agents: AgentRegistry
    runs: RunService

    @classmethod
    def build(cls, settings: Settings) -> "WebState":
        db = Database(settings.resolved_database_url())
        agents = default_registry()
        return cls(
            settings=settings,
            jwt_secret=settings.jwt_secret(),
            db=db,
            router=SocketRouter(settings.require_redis_url(), prefix=settings.channel_prefix),
            agents=agents,
            runs=RunService(
                db=db, agents=agents,
                signing_key=settings.context_signing_key(), enqueue=celery_enqueue,
            ),
        )

    def close(self) -> None:
        self.router.stop()
        self.db.dispose()


def state() -> WebState:
    """The WebState of the app handling the current request."""
    return current_app.extensions["runlane"]  # type: ignore[no-any-return]

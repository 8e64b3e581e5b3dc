"""The web process: create_app() builds the Flask app; nothing happens at import time."""
from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from runlane.settings import Settings, load
from webapp import problems, socket_conn
from webapp.extensions import WebState, sock

log = logging.getLogger(__name__)

PREFIXES = ("/api/agents", "/api/agent")


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Settings from the environment, then `overrides` (Settings field names)."""
    from webapp import dashboard, health, logcontext, metrics, migration, openapi, sockets, v1, v2  # noqa: PLC0415 - blueprints import the extensions

    settings = load(overrides)
    _require_schema(settings)
    app = Flask(
        __name__, instance_path=str(settings.instance_path.resolve()), static_folder=None
    )
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_content_length,
        # No ping_interval here: simple-websocket would give every socket a selector and a
        # timer; webapp/sockets.py pings on the router's one process-wide tick instead.
        SOCK_SERVER_OPTIONS={"max_message_size": settings.socket_max_message_size},
    )
    web_state = WebState.build(settings)
    app.extensions["runlane"] = web_state
    atexit.register(web_state.close)
    problems.init_app(app)
    sock.init_app(app)
    socket_conn.install(app)  # flask-sock's sockets get the one-writer reader
    logcontext.init_app(app)
    app.register_blueprint(health.bp)
    metrics.init_app(app)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(dashboard.bp)
    for prefix in PREFIXES:
        suffix = prefix.rsplit("/", 1)[-1]
        app.register_blueprint(v2.bp, url_prefix=f"{prefix}/v2", name=f"v2_{suffix}")
        app.register_blueprint(sockets.bp, url_prefix=f"{prefix}/v2", name=f"sockets_{suffix}")
        app.register_blueprint(v1.bp, url_prefix=prefix, name=f"v1_{suffix}")
    if settings.cors_origins:  # off unless an allow-list is configured
        from flask_cors import CORS  # noqa: PLC0415

        CORS(app, resources={r"/api/*": {"origins": settings.cors_origins}},
             allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID"],
             expose_headers=["Location", "Retry-After", "X-Request-ID", "Deprecation", "Sunset",
                             "Link"])
    migration.log_startup(app, settings)
    return app


def _require_schema(settings: Settings) -> None:
    """Refuse to serve a database without the schema (every request would fail); one that
    cannot be reached yet is left to /readyz, as a database that goes away later would be.

    Raises:
        storage.schema.SchemaNotCurrent: reachable and not at head, auto-migrate off.
    """
    from sqlalchemy.exc import OperationalError  # noqa: PLC0415

    from storage.schema import require_current_schema  # noqa: PLC0415

    try:
        require_current_schema(settings.resolved_database_url(),
                               auto_migrate=settings.auto_migrate)
    except OperationalError as exc:
        log.warning("database not reachable at start, /readyz answers 503 until it is: %s",
                    exc.orig if exc.orig is not None else exc)

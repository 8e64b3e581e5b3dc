"""The web app's factory: create_app() builds the Flask app and the process's WebState.

The composition root of the web: it imports every blueprint and webapp/extensions.py, and
with them the database, the dispatcher and Celery's client side. It is its own module, not
webapp/__init__.py, so that importing any webapp submodule (webapp.auth for a token check)
does not load all of that; `from webapp import create_app` still reaches it.
"""
from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

# By name from each submodule, not `from webapp import ...`: that would import the package,
# whose create_app imports this module.
from runlane.settings import Settings, load
from webapp.dashboard import bp as dashboard_bp
from webapp.extensions import WebState, sock
from webapp.health import bp as health_bp
from webapp.logcontext import init_app as init_logcontext
from webapp.metrics import init_app as init_metrics
from webapp.migration import log_startup
from webapp.openapi import bp as openapi_bp
from webapp.problems import init_app as init_problems
from webapp.socket_conn import install as install_socket_conn
from webapp.sockets import bp as sockets_bp
from webapp.v1 import bp as v1_bp
from webapp.v2 import bp as v2_bp

log = logging.getLogger(__name__)

PREFIXES = ("/api/agents", "/api/agent")


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Settings from the environment, then `overrides` (Settings field names)."""
    settings = load(overrides)
    _require_schema(settings)
    # "webapp", not this module's name: the app's name (its logger's) and root folder stay
    # the package's.
    app = Flask(
        "webapp", instance_path=str(settings.instance_path.resolve()), static_folder=None
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
    init_problems(app)
    sock.init_app(app)
    install_socket_conn(app)  # flask-sock's sockets get the one-writer reader
    init_logcontext(app)
    app.register_blueprint(health_bp)
    init_metrics(app)
    app.register_blueprint(openapi_bp)
    app.register_blueprint(dashboard_bp)
    for prefix in PREFIXES:
        suffix = prefix.rsplit("/", 1)[-1]
        app.register_blueprint(v2_bp, url_prefix=f"{prefix}/v2", name=f"v2_{suffix}")
        app.register_blueprint(sockets_bp, url_prefix=f"{prefix}/v2", name=f"sockets_{suffix}")
        app.register_blueprint(v1_bp, url_prefix=prefix, name=f"v1_{suffix}")
    if settings.cors_origins:  # off unless an allow-list is configured
        from flask_cors import CORS  # noqa: PLC0415

        CORS(app, resources={r"/api/*": {"origins": settings.cors_origins}},
             allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID"],
             expose_headers=["Location", "Retry-After", "X-Request-ID", "Deprecation", "Sunset",
                             "Link"])
    log_startup(app, settings)
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

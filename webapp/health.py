"""Liveness and readiness probes for load balancers and orchestrators."""
from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify

from storage.schema import probe_write, schema_status
from webapp.apidoc import documented
from webapp.extensions import state
from webapp.problems import problem

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@documented(summary="Liveness: the process answers", tags=("meta",), auth=False, errors=(),
            responses={200: None})
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
@documented(summary="Readiness: Redis answers; the database is at schema head and writes",
            tags=("meta",), auth=False, errors=(503,), responses={200: None})
def readyz() -> Response:
    """Ready when Redis answers, the schema is at this code's head and the database accepts a
    write: a database that answers `SELECT 1` but cannot write (failing disk, read-only
    standby) or has an older schema would fail every submission behind a 200."""
    st = state()
    failing = []
    try:
        client = redis.Redis.from_url(st.settings.require_redis_url(), socket_timeout=1,
                                      socket_connect_timeout=1)
        client.ping()
        client.close()
    except redis.RedisError:
        failing.append("redis")
    detail = ""
    try:
        status = schema_status(st.db.engine)
    except Exception:  # noqa: BLE001 - any database failure means not ready
        failing.append("database")
    else:
        if not status.at_head:
            failing.append("schema")
            detail = f"; {status.describe()}"
        else:
            try:
                probe_write(st.db.engine)
            except Exception:  # noqa: BLE001 - reads but cannot write: not ready either
                failing.append("database")
    if failing:
        return problem(503, "Service unavailable", f"failing: {', '.join(failing)}{detail}",
                       failing=failing)
    return jsonify(status="ready")

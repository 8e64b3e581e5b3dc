"""Liveness and readiness probes for load balancers and orchestrators."""
from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify
from sqlalchemy import text

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
@documented(summary="Readiness: Redis and the database are reachable", tags=("meta",),
            auth=False, errors=(503,), responses={200: None})
def readyz() -> Response:
    st = state()
    failing = []
    try:
        client = redis.Redis.from_url(st.settings.require_redis_url(), socket_timeout=1,
                                      socket_connect_timeout=1)
        client.ping()
        client.close()
    except redis.RedisError:
        failing.append("redis")
    try:
        with st.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any database failure means not ready
        failing.append("database")
    if failing:
        return problem(503, "Service unavailable", f"unreachable: {', '.join(failing)}",
                       failing=failing)
    return jsonify(status="ready")

"""Liveness and readiness probes for load balancers and orchestrators."""
from __future__ import annotations

import threading
import time

import redis
from flask import Blueprint, Response, current_app, jsonify
from flask.blueprints import BlueprintSetupState

from storage.schema import probe_write, schema_status
from webapp.apidoc import documented
from webapp.extensions import WebState
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
    failing, detail = current_app.extensions[_READINESS].answer()
    if failing:
        return problem(503, "Service unavailable", f"failing: {', '.join(failing)}{detail}",
                       failing=list(failing))
    return jsonify(status="ready")


# How long one readiness answer is given again. The route needs no token and its probe
# commits a write on SQLite: without this, anyone polling it fast makes the database write
# as fast, and every prober connects to Redis and the database at once.
READY_CACHE_SECONDS = 1.0
_READINESS = "runlane.readiness"


class Readiness:
    """One process's readiness answer, probed at most once per READY_CACHE_SECONDS and on the
    process's Redis client (its pool keeps the connection for the next probe). Callers that
    arrive while a probe runs wait for its answer rather than probing too."""

    def __init__(self, st: WebState) -> None:
        self._state = st
        self._lock = threading.Lock()
        self._answer: tuple[tuple[str, ...], str] = ((), "")
        self._until = float("-inf")

    def answer(self) -> tuple[tuple[str, ...], str]:
        """(what fails, detail) as of at most READY_CACHE_SECONDS ago."""
        with self._lock:
            if time.monotonic() >= self._until:
                self._answer = self._probe()
                self._until = time.monotonic() + READY_CACHE_SECONDS
            return self._answer

    def _probe(self) -> tuple[tuple[str, ...], str]:
        st = self._state
        failing = []
        try:
            st.redis.ping()
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
        return tuple(failing), detail


@bp.record_once
def _readiness_per_app(setup: BlueprintSetupState) -> None:
    setup.app.extensions[_READINESS] = Readiness(setup.app.extensions["runlane"])

"""The legacy v1 routes, served through the FactoryAdapter onto the v2 service.

Mounted under /api/agents and /api/agent. Every answer carries Deprecation, Sunset and a
successor Link; in `factory_only` mode (globally or for one route) a route answers 410.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, request

import webapp.v1_models as v1_models
from factories.adapter import FactoryAdapter
from webapp.apidoc import Param, documented
from webapp.auth import current_principal, require_principal
from webapp.extensions import state
from webapp.migration import V1_ROUTES, count_call, current_rule, deprecation_headers
from webapp.problems import problem
from webapp.ratelimit import admit_submission, limit_submissions
from webapp.requests import (
    checked_id,
    only_documented_query,
    parse_body,
    query_int,
    request_id,
)
from webapp.v1_models import (
    V1Execute,
    V1ExecuteFinished,
    V1ExecutePending,
    V1Message,
    V1RunAgent,
    V1Started,
    V1State,
    V1Status,
    V1ThreadRuns,
)
from webapp.v2 import sse_response

bp = Blueprint("v1", __name__)
bp.before_request(only_documented_query)
F = TypeVar("F", bound=Callable[..., Any])
V1_ERRORS = (400, 401, 404, 410, 413, 422, 429)


def v1_route(name: str) -> Callable[[F], F]:
    """Mark a view as the v1 route `name`: migration mode, call counting, deprecation."""
    route = V1_ROUTES[name]

    def wrap(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            st = state()
            if st.settings.migration_mode_for(name) == "factory_only":
                return problem(410, "Gone", f"this v1 route is retired; use {route.successor}",
                               successor=route.successor)
            count_call(st.redis, st.settings, current_rule())
            return view(*args, **kwargs)

        wrapper.__v1_route__ = name  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return wrap


def _adapter() -> FactoryAdapter:
    return state().adapter


def _json(model: Any, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status=status, mimetype="application/json")


@bp.post("/execute")
@documented(summary="Run an agent and wait for its end (legacy; blocking up to `timeout`)",
            tags=("v1",), body=V1Execute, deprecated=True, errors=(*V1_ERRORS, 503),
            responses={200: V1ExecuteFinished, 202: V1ExecutePending})
@v1_route("execute")
@require_principal
@limit_submissions
def execute() -> Response:
    started = time.monotonic()
    body = parse_body(V1Execute)
    st, adapter = state(), _adapter()
    user = current_principal().user_id
    ctx = adapter.context(user_id=user, request_id=request_id(), text=body.message,
                          agent=body.agent_type, thread_id=body.thread_id)
    # Waits on the run's event stream (no polling); the log covers what came before attach.
    # Subscribed before the run is submitted: when the stream is unavailable the 503 comes
    # with nothing submitted, so the client's retry cannot run the agent twice.
    with st.watch(user, ctx.run_id) as watch:
        adapter.submit(ctx, "execute", admit_submission)
        remaining = max(0.0, body.timeout - (time.monotonic() - started))
        events = [e for e in watch.events(timeout=remaining) if e is not None]
    answer = v1_models.execute_answer(st.runs.get(user, ctx.run_id), events)
    return _json(answer, 200 if isinstance(answer, V1ExecuteFinished) else 202)


@bp.post("/run_agent")
@documented(summary="Start a run of the default agent (legacy)", tags=("v1",), body=V1RunAgent,
            deprecated=True, errors=V1_ERRORS, responses={200: V1Started})
@v1_route("run_agent")
@require_principal
@limit_submissions
def run_agent() -> Response:
    body = parse_body(V1RunAgent)
    return _start(body.query, body.id, "run_agent")


@bp.post("/message")
@documented(summary="Send a message to a thread's default agent (legacy)", tags=("v1",),
            body=V1Message, deprecated=True, errors=V1_ERRORS, responses={200: V1Started})
@v1_route("message")
@require_principal
@limit_submissions
def message() -> Response:
    body = parse_body(V1Message)
    return _start(body.message, body.thread_id, "message")


def _start(text: str, thread_id: str | None, route: str) -> Response:
    """Start a run of the default agent for a fire-and-forget v1 route."""
    adapter = _adapter()
    ctx = adapter.context(user_id=current_principal().user_id, request_id=request_id(),
                          text=text, thread_id=thread_id)
    return _json(v1_models.started(adapter.submit(ctx, route, admit_submission)))


@bp.post("/stream")
@documented(summary="Start a run and stream its events as Server-Sent Events (legacy)",
            tags=("v1",), body=V1RunAgent, deprecated=True, errors=(*V1_ERRORS, 503),
            responses={200: None}, media={200: "text/event-stream"})
@v1_route("stream")
@require_principal
@limit_submissions
def stream() -> Response:
    body = parse_body(V1RunAgent)
    st, adapter = state(), _adapter()
    user = current_principal().user_id
    ctx = adapter.context(user_id=user, request_id=request_id(), text=body.query, thread_id=body.id)
    # Subscribed before the run is submitted (see `execute`), and before the 200 is sent.
    response = sse_response(st.watch(user, ctx.run_id), timeout=ctx.limits.hard_time_limit)
    try:
        adapter.submit(ctx, "stream", admit_submission)
    except BaseException:
        response.close()  # leaves the watch
        raise
    return response


@bp.get("/<run_id>/status")
@documented(summary="Whether a run has finished (legacy)", tags=("v1",), deprecated=True,
            errors=V1_ERRORS, responses={200: V1Status})
@v1_route("status")
@require_principal
def run_status(run_id: str) -> Response:
    run = state().runs.get(current_principal().user_id, checked_id(run_id, "run_id"))
    return _json(v1_models.status(run))


@bp.get("/<run_id>/state")
@documented(summary="A run's state and result (legacy)", tags=("v1",), deprecated=True,
            errors=V1_ERRORS, responses={200: V1State})
@v1_route("state")
@require_principal
def run_state(run_id: str) -> Response:
    run = state().runs.get(current_principal().user_id, checked_id(run_id, "run_id"))
    return _json(v1_models.state(run))


@bp.get("/thread/<thread_id>/runs")
@documented(summary="A thread's runs, newest first (legacy)", tags=("v1",), deprecated=True,
            errors=V1_ERRORS, responses={200: V1ThreadRuns},
            params=(Param("limit", {"type": "integer", "minimum": 1, "maximum": 100,
                                    "default": 20}),))
@v1_route("thread_runs")
@require_principal
def thread_runs(thread_id: str) -> Response:
    st = state()
    thread_id = checked_id(thread_id, "thread_id")
    limit = query_int("limit", 20, low=1, high=st.settings.runs_page_max)
    page = st.runs.list(current_principal().user_id, thread_id, limit=limit, cursor=None)
    return _json(v1_models.thread_runs(thread_id, page.items))


@bp.after_request
def _mark_deprecated(response: Response) -> Response:
    view = current_app.view_functions.get(request.endpoint or "")
    name = getattr(view, "__v1_route__", None)
    if name is not None:
        deprecation_headers(response, state().settings, V1_ROUTES[name])
    response.headers["X-Request-ID"] = request_id()
    return response

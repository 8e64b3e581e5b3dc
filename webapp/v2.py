"""The v2 API, mounted under /api/agents/v2 and /api/agent/v2. Views stay thin."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, request, url_for

from domain.context import UserExecutionContext
from domain.events import MAX_SEQ
from webapp.apidoc import COMMON_ERRORS, Param, documented
from webapp.auth import current_principal, require_principal
from webapp.extensions import state
from webapp.migration import report
from webapp.ratelimit import admit_submission, limit_submissions
from webapp.requests import (
    bounded_int,
    checked_id,
    only_documented_query,
    parse_body,
    query_int,
    query_str,
    request_id,
)
from webapp.runs import CURSOR_MAX_LENGTH
from webapp.schemas import (
    AgentInfo,
    AgentList,
    EventOut,
    EventPage,
    MigrationReport,
    RunPage,
    RunResource,
    SubmitRun,
)
from webapp.streams import RunWatch, sse_frames

bp = Blueprint("v2", __name__)
bp.before_request(only_documented_query)


def _json(model: Any, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status=status, mimetype="application/json")


def sse_response(watch: RunWatch, timeout: float) -> Response:
    """A Server-Sent Events response of `watch`'s events, the watch entered first.

    Entering (subscribing, reading the user's cursor) is what fails when Redis or the database
    is down; done inside the body it would fail after the 200 was sent and leave the client a
    truncated stream, so it is done here and its error becomes a problem (503). The watch is
    left when the body ends, fails or is closed by the server because the client went away,
    even when the body was never started (a generator closed before its first step runs no
    `finally`, hence the close callback as well).
    """
    watch.__enter__()
    done = False

    def leave() -> None:
        nonlocal done
        if not done:
            done = True
            watch.__exit__(None, None, None)

    def frames() -> Iterator[str]:
        try:
            yield from sse_frames(watch.events(timeout=timeout))
        finally:
            leave()

    try:
        response = Response(frames(), mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.call_on_close(leave)
    except BaseException:
        leave()
        raise
    return response


@bp.post("/thread/<thread_id>/runs")
@documented(summary="Submit a run to a thread (created on first use)", tags=("v2",),
            body=SubmitRun, responses={202: RunResource, 200: RunResource},
            errors=(400, 401, 404, 409, 413, 422, 429),
            description="202: a new run. 200: the run created earlier with the same "
                        "idempotency_key. 409: `reject` strategy and the thread is busy. "
                        "429: too many of your runs are waiting, or too many submissions per "
                        "minute (see Retry-After).")
@require_principal
@limit_submissions
def submit_run(thread_id: str) -> Response:
    thread_id = checked_id(thread_id, "thread_id")
    body = parse_body(SubmitRun)
    st = state()
    ctx = UserExecutionContext(
        user_id=current_principal().user_id, thread_id=thread_id, run_id=uuid.uuid4().hex,
        request_id=request_id(), agent=body.agent, input=body.input,
        created_at=datetime.now(UTC), limits=st.agent_factory.limits(body.agent),
    )
    run, replayed = st.runs.submit(ctx, body.metadata, idempotency_key=body.idempotency_key,
                                   strategy=body.multitask_strategy, admit=admit_submission)
    response = _json(run, 200 if replayed else 202)
    response.headers["Location"] = url_for(".run_state", run_id=run.run_id)
    return response


@bp.post("/<run_id>/cancel")
@documented(summary="Cancel one of your runs (harmless twice; 409 once it has finished)",
            tags=("v2",), responses={202: RunResource}, errors=(400, 401, 404, 409))
@require_principal
def cancel_run(run_id: str) -> Response:
    run = state().runs.cancel(current_principal().user_id, checked_id(run_id, "run_id"))
    return _json(run, 202)


@bp.get("/<run_id>/state")
@documented(summary="The state of one of your runs", tags=("v2",), responses={200: RunResource})
@require_principal
def run_state(run_id: str) -> Response:
    run_id = checked_id(run_id, "run_id")
    principal = current_principal()
    if principal.admin:  # opt-in operations role; every such read is logged
        return _json(state().runs.get_as_admin(principal.user_id, run_id))
    return _json(state().runs.get(principal.user_id, run_id))


_PAGE_PARAMS = (
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
    Param("cursor", {"type": "string", "minLength": 1, "maxLength": CURSOR_MAX_LENGTH,
                     "pattern": "^[A-Za-z0-9_-]+$"}, "next_cursor of the previous page"),
)


def _runs_page(thread_id: str | None) -> Response:
    st = state()
    limit = query_int("limit", 20, low=1, high=st.settings.runs_page_max)
    page = st.runs.list(
        current_principal().user_id, thread_id, limit=limit, cursor=query_str("cursor")
    )
    return _json(page)


@bp.get("/thread/<thread_id>/runs")
@documented(summary="Your runs of a thread, newest first", tags=("v2",),
            responses={200: RunPage}, params=_PAGE_PARAMS)
@require_principal
def thread_runs(thread_id: str) -> Response:
    return _runs_page(checked_id(thread_id, "thread_id"))


@bp.get("/runs")
@documented(summary="Your runs of every thread, newest first", tags=("v2",),
            responses={200: RunPage}, params=_PAGE_PARAMS)
@require_principal
def all_runs() -> Response:
    return _runs_page(None)


@bp.get("/agents")
@documented(summary="The agents you can run, with their input schemas", tags=("v2",),
            responses={200: AgentList}, errors=(401,))
@require_principal
def list_agents() -> Response:
    agents = AgentList(
        items=[
            AgentInfo(name=a.name, description=a.description, input_schema=a.input_schema)
            for a in state().agents
        ]
    )
    return _json(agents)


@bp.get("/<run_id>/events")
@documented(
    summary="A run's stored events after `after`; with Accept: text/event-stream, backlog then "
            "live as Server-Sent Events until the run ends (Last-Event-ID honoured)",
    tags=("v2",), responses={200: EventPage}, media={200: "application/json, text/event-stream"},
    errors=(*COMMON_ERRORS, 503),
    params=(
        Param("after", {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0},
              "last seq already seen"),
        Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
    ),
)
@require_principal
def run_events(run_id: str) -> Response:
    st = state()
    user = current_principal().user_id
    run = st.runs.get(user, checked_id(run_id, "run_id"))  # 404 before anything is read
    after = query_int("after", 0, low=0, high=MAX_SEQ)
    if request.accept_mimetypes.best_match(["application/json", "text/event-stream"]) == (
        "text/event-stream"
    ):
        last_id = request.headers.get("Last-Event-ID", "")
        if last_id:  # a browser's reconnect says where it was; empty means from the start
            after = max(after, bounded_int(last_id, "Last-Event-ID", low=0, high=MAX_SEQ))
        return sse_response(st.watch(user, run.run_id, after_seq=after), timeout=3600)
    limit = query_int("limit", 100, low=1, high=1000)
    events = st.events.read_after(user, run.run_id, after, limit)
    return _json(EventPage(items=[EventOut(**e.to_dict()) for e in events],
                           next_after=events[-1].seq if events else after))


@bp.get("/migration")
@documented(summary="v1 → v2 migration: mode, every route, and v1 calls across all processes",
            tags=("v2",), responses={200: MigrationReport}, errors=(401,))
@require_principal
def migration_report() -> Response:
    st = state()
    return _json(MigrationReport.model_validate(report(current_app, st.settings, st.redis)))


@bp.after_request
def _echo_request_id(response: Response) -> Response:
    response.headers["X-Request-ID"] = request_id()
    return response


"""The v2 API, mounted under /api/agents/v2 and /api/agent/v2. Views stay thin."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, request, url_for

from factories.context import UserExecutionContext
from webapp.auth import current_principal, require_principal
from webapp.extensions import state
from webapp.requests import checked_id, parse_body, query_int, request_id
from webapp.schemas import AgentInfo, AgentList, SubmitRun

bp = Blueprint("v2", __name__)


def _json(model: Any, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status=status, mimetype="application/json")


@bp.post("/thread/<thread_id>/runs")
@require_principal
def submit_run(thread_id: str) -> Response:
    thread_id = checked_id(thread_id, "thread_id")
    body = parse_body(SubmitRun)
    ctx = UserExecutionContext(
        user_id=current_principal().user_id, thread_id=thread_id, run_id=uuid.uuid4().hex,
        request_id=request_id(), agent=body.agent, input=body.input,
        created_at=datetime.now(timezone.utc),
    )
    run = state().runs.submit(ctx, body.metadata)
    response = _json(run, 202)
    response.headers["Location"] = url_for(".run_state", run_id=run.run_id)
    return response


@bp.get("/<run_id>/state")
@require_principal
def run_state(run_id: str) -> Response:
    run_id = checked_id(run_id, "run_id")
    return _json(state().runs.get(current_principal().user_id, run_id))


@bp.get("/thread/<thread_id>/runs")
@require_principal
def thread_runs(thread_id: str) -> Response:
    thread_id = checked_id(thread_id, "thread_id")
    st = state()
    limit = query_int("limit", 20, low=1, high=st.settings.runs_page_max)
    page = st.runs.list(
        current_principal().user_id, thread_id, limit=limit, cursor=request.args.get("cursor")
    )
    return _json(page)


@bp.get("/agents")
@require_principal
def list_agents() -> Response:
    agents = AgentList(
        items=[
            AgentInfo(name=a.name, description=a.description, input_schema=a.input_schema)
            for a in state().agents
        ]
    )
    return _json(agents)


@bp.after_request
def _echo_request_id(response: Response) -> Response:
    response.headers["X-Request-ID"] = request_id()
    return response


"""Per-request log context and the access line.

Every record logged while a request is handled carries its request_id (the caller's
X-Request-ID when sane, else a new one), the user_id once the token is verified
(webapp.auth binds it) and the run_id it concerns. One access line per request replaces
gunicorn's, which is written after the request is gone and so could carry none of them.
Ours is written once the response has been sent, in a copy of the request's log context,
so formatting and writing it stay off every request's path (docs/benchmarks.md).
"""
from __future__ import annotations

import contextvars
import logging
import time

from flask import Flask, Response, g, request

from domain.ids import is_id
from runlane import logs
from webapp.requests import request_id

access = logging.getLogger("runlane.access")


def init_app(app: Flask) -> None:
    app.before_request(_bind)
    app.after_request(_access_line)
    app.teardown_request(_unbind)


def _bind() -> None:
    run_id = (request.view_args or {}).get("run_id")
    g.log_tokens = logs.bind(
        request_id=request_id(), user_id=None,
        # A path's run id only labels the lines; the views check it is the caller's.
        run_id=run_id if is_id(run_id) else None,
    )
    g.log_started = time.perf_counter()


def _access_line(response: Response) -> Response:
    started = g.get("log_started")
    elapsed = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    # The path only: a query string could carry a token some client put there.
    args = (request.method, request.path, response.status_code, elapsed)
    context = contextvars.copy_context()  # the ids bound for this request
    response.call_on_close(lambda: context.run(access.info, "%s %s %s %.1fms", *args))
    return response


def _unbind(_exc: BaseException | None) -> None:
    tokens = g.pop("log_tokens", None)
    if tokens is not None:
        logs.unbind(tokens)

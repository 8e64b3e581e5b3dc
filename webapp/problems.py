"""RFC 9457 problem details: every error leaves the web process through here."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch

from domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RunlaneError,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    UnprocessableInput,
)

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
# Seconds a 503 asks the client to wait: the event router keeps reconnecting meanwhile.
SERVICE_RETRY_AFTER = 2
# The one place a domain error meets HTTP; anything not listed (a configuration error, a
# context that failed to verify) is the server's fault: 500.
HTTP_STATUS: dict[type[RunlaneError], int] = {
    InvalidInput: 400, Unauthenticated: 401, NotFound: 404, Conflict: 409,
    PayloadTooLarge: 413, UnprocessableInput: 422, TooManyRequests: 429, Unavailable: 503,
}


def http_status(exc: RunlaneError) -> int:
    """The status of the nearest listed class in `exc`'s ancestry."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body["instance"] = request.path
    body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="runlane"'
    return response


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"path": "/" + "/".join(str(p) for p in err["loc"]), "message": err["msg"]}
        for err in exc.errors()
    ]


def init_app(app: Flask) -> None:
    @app.errorhandler(RunlaneError)
    def _runlane(exc: RunlaneError) -> Response:
        status = http_status(exc)
        if status == 500:
            # A bug or a misconfiguration: what it says is for the log, not for the client.
            log.error("internal error: %s", exc)
            return problem(500, "Internal error")
        response = problem(status, exc.title, exc.detail, **exc.extra)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        elif status == 503:
            # Raised on purpose (the event stream is down): the client learns it may retry
            # and when, instead of a 500 that says nothing about whether its request counted.
            log.warning("unavailable: %s", exc)
            retry_after = getattr(exc, "retry_after", None)
            response.headers["Retry-After"] = str(retry_after or SERVICE_RETRY_AFTER)
        return response

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response:
        return problem(422, "Unprocessable input", "the request body is not valid",
                       errors=validation_errors(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        detail = exc.description
        if isinstance(exc, WebsocketMismatch):
            detail = "this route speaks the websocket protocol only (see docs/websocket.md)"
        response = problem(exc.code or 500, exc.name, detail)
        if exc.code == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        return problem(500, "Internal error", "the server failed to handle this request")

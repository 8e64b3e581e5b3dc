"""The OpenAPI 3.1 document, generated from the app's routes and the models that validate them.

Every route's facts come from its `@documented` view (webapp/apidoc.py); routes without one
are listed in UNDOCUMENTED_OK below only if they are not HTTP API routes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    render_template,
    send_from_directory,
)
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from werkzeug.routing import Rule

from domain.ids import ID_PATTERN
from webapp.apidoc import OperationDoc, doc_of, documented
from webapp.problems import PROBLEM_JSON
from webapp.schemas import EventOut, Problem

bp = Blueprint("openapi", __name__, template_folder="templates")
ALIAS_PREFIX = "/api/agent/"  # the same views, mounted for old clients; documented once
TAGS = (
    {"name": "v2", "description": "The API: runs, their events and state"},
    {"name": "v1", "description": "Legacy routes, served through the v2 service (deprecated)"},
    {"name": "meta", "description": "This document, the docs page and the dashboard"},
)
_TAG_ORDER = {tag["name"]: index for index, tag in enumerate(TAGS)}
_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_STATIC = Path(__file__).with_name("static")
_TITLES = {101: "Switching Protocols", 400: "Bad request", 401: "Unauthorized", 404: "Not found",
           409: "Conflict", 410: "Gone", 413: "Payload too large", 422: "Unprocessable input",
           429: "Too many requests", 503: "Service unavailable"}


def _sse_event(data_schema: dict[str, Any]) -> dict[str, Any]:
    """One Server-Sent Event: `id` is the seq, `event` the type, `data` an EventOut as JSON."""
    return {
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "event": {"type": "string"},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": data_schema},
        },
    }


def _models(app: Flask) -> list[tuple[type[BaseModel], str]]:
    found: dict[tuple[type[BaseModel], str], None] = {
        (Problem, "serialization"): None, (EventOut, "serialization"): None,
    }
    for view in app.view_functions.values():
        doc = doc_of(view)
        if doc is None:
            continue
        if doc.body is not None:
            found[(doc.body, "validation")] = None
        for model in doc.responses.values():
            if model is not None:
                found[(model, "serialization")] = None
    return list(found)


def _documented_rules(app: Flask) -> list[tuple[Rule, OperationDoc]]:
    """The rules to describe, v2 first, then v1, then the rest; each path once (the alias
    prefix serves the same views and stays out of the document)."""
    found = []
    for rule in app.url_map.iter_rules():
        doc = doc_of(app.view_functions[rule.endpoint])
        if doc is not None and not rule.rule.startswith(ALIAS_PREFIX):
            found.append((rule, doc))
    order = len(TAGS)
    return sorted(found, key=lambda item: (
        min((_TAG_ORDER.get(t, order) for t in item[1].tags), default=order), item[0].rule))


def build_document(app: Flask) -> dict[str, Any]:
    """The whole document; cheap enough to build per request, cached on the app anyway."""
    models = _models(app)
    refs, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    schemas = defs.get("$defs", {})
    agents = app.extensions["runlane"].agents
    for key in models:
        refine = getattr(key[0], "openapi_refine", None)
        if refine is not None:
            name = refs[key]["$ref"].rsplit("/", 1)[1]  # type: ignore[index]
            schemas[name] = refine(schemas[name], agents)

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return refs[(model, mode)]  # type: ignore[index]

    problem = {PROBLEM_JSON: {"schema": ref(Problem, "serialization")}}
    paths: dict[str, dict[str, Any]] = {}
    for rule, doc in _documented_rules(app):
        path = _ARG.sub(r"{\1}", rule.rule)
        params: list[dict[str, Any]] = [
            {"name": arg, "in": "path", "required": True,
             "schema": {"type": "string"} if arg == "filename"
             else {"type": "string", "pattern": ID_PATTERN}}
            for arg in sorted(rule.arguments)
        ]
        params += [
            {"name": p.name, "in": p.location, "required": p.required, "schema": p.schema,
             **({"description": p.description} if p.description else {})}
            for p in doc.params
        ]
        responses: dict[str, Any] = {}
        for status, model in doc.responses.items():
            media = doc.media.get(status, "application/json")
            content: dict[str, Any] = {}
            for kind in (m.strip() for m in media.split(",")):
                if kind == "text/event-stream":
                    content[kind] = {"schema": _sse_event(ref(EventOut, "serialization"))}
                elif kind == "application/json":
                    content[kind] = {"schema": ref(model, "serialization") if model else {}}
                else:
                    content[kind] = {"schema": {"type": "string"}}
            responses[str(status)] = {"description": doc.summary, "content": content}
        for status in doc.errors:
            responses[str(status)] = {"description": _TITLES.get(status, "Error"),
                                      "content": problem}
        for method in sorted(m for m in rule.methods or () if m not in ("HEAD", "OPTIONS")):
            operation: dict[str, Any] = {
                "operationId": f"{rule.endpoint}.{method.lower()}".replace(".", "_"),
                "summary": doc.summary,
                "tags": list(doc.tags),
                "parameters": params,
                "responses": responses,
            }
            if doc.description:
                operation["description"] = doc.description
            if doc.deprecated:
                operation["deprecated"] = True
            if doc.auth:
                operation["security"] = [{"bearerAuth": []}]
            if doc.body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref(doc.body, "validation")}},
                }
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Runlane API",
            "version": "2.0.0",
            "description": "Multi-tenant agent execution. v1 routes are deprecated and served "
                           "through the FactoryAdapter; the event socket is described in "
                           "docs/websocket.md. Every route under /api/agents/ is also served "
                           "under /api/agent/ (an alias kept for old clients).",
        },
        "servers": [{"url": "/"}],
        "tags": [dict(tag) for tag in TAGS],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "bearerFormat": "JWT"}},
        },
    }


def _swagger_dist() -> str:
    import flask_swagger_ui  # noqa: PLC0415 - only the docs page needs it

    return str(Path(flask_swagger_ui.__file__).with_name("dist"))


@bp.get("/api/openapi.json")
@documented(summary="This OpenAPI document", tags=("meta",), auth=False, errors=(),
            responses={200: None})
def openapi_json() -> Response:
    document = current_app.extensions.get("runlane.openapi")
    if document is None:
        # Serialised once, in the document's own order (jsonify would sort the paths).
        document = current_app.extensions["runlane.openapi"] = json.dumps(
            build_document(current_app))
    return Response(document, mimetype="application/json")


@bp.get("/api/docs", strict_slashes=False)
@documented(summary="Interactive API documentation (works offline)", tags=("meta",),
            auth=False, errors=(), responses={200: None}, media={200: "text/html"})
def docs_page() -> str:
    return render_template("docs.html")


@bp.get("/api/docs/assets/<path:filename>")
@documented(summary="Assets of the documentation page", tags=("meta",), auth=False,
            errors=(404,), responses={200: None}, media={200: "application/octet-stream"})
def docs_assets(filename: str) -> Response:
    if filename == "runlane-docs.js":
        return send_from_directory(_STATIC, filename)
    return send_from_directory(_swagger_dist(), filename)


@bp.after_request
def _page_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response

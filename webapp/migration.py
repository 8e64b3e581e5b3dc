"""The v1 → v2 migration: modes per route, deprecation headers, call counts, the report."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any

import redis
from flask import Flask, Response, request

from runlane import metrics
from runlane.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class V1Route:
    name: str
    successor: str


# Every v1 route and the v2 route that replaces it (the `Link: rel="successor-version"`).
V1_ROUTES = {
    "execute": V1Route("execute", "/api/agents/v2/thread/{thread_id}/runs"),
    "run_agent": V1Route("run_agent", "/api/agents/v2/thread/{thread_id}/runs"),
    "message": V1Route("message", "/api/agents/v2/thread/{thread_id}/runs"),
    "status": V1Route("status", "/api/agents/v2/{run_id}/state"),
    "state": V1Route("state", "/api/agents/v2/{run_id}/state"),
    "thread_runs": V1Route("thread_runs", "/api/agents/v2/thread/{thread_id}/runs"),
    "stream": V1Route("stream", "/api/agents/v2/{run_id}/events"),
}


def calls_key(settings: Settings) -> str:
    return f"{settings.channel_prefix}:v1:calls"


def count_call(client: redis.Redis, settings: Settings, rule: str) -> None:
    """Count one v1 call in Redis, shared by every web process; never fails the request."""
    metrics.V1_CALLS.labels(route=rule).inc()  # `rule` is a route pattern: bounded
    try:
        client.hincrby(calls_key(settings), rule, 1)
    except redis.RedisError as exc:
        log.warning("could not count a v1 call (%s)", exc)


def deprecation_headers(response: Response, settings: Settings, route: V1Route) -> None:
    """RFC 9745 Deprecation, RFC 8594 Sunset and the successor link."""
    response.headers["Deprecation"] = f"@{int(settings.v1_deprecated_at.timestamp())}"
    response.headers["Sunset"] = format_datetime(settings.v1_sunset, usegmt=True)
    response.headers["Link"] = f'<{route.successor}>; rel="successor-version"'


def _api_rules(app: Flask) -> list[Any]:
    return sorted(
        (r for r in app.url_map.iter_rules() if r.rule.startswith("/api/agent")),
        key=lambda r: r.rule,
    )


def _v1_name(app: Flask, endpoint: str) -> str | None:
    view = app.view_functions.get(endpoint)
    return getattr(view, "__v1_route__", None)


def log_startup(app: Flask, settings: Settings) -> None:
    """The lines operators grep for when following a migration."""
    log.info("Migration Mode: %s", settings.migration_mode)
    for rule in _api_rules(app):
        name = _v1_name(app, rule.endpoint)
        if name and settings.migration_mode_for(name) == "factory_preferred":
            log.info("Factory pattern enabled for route: %s", rule.rule)


def report(app: Flask, settings: Settings, client: redis.Redis) -> dict[str, Any]:
    try:
        raw = client.hgetall(calls_key(settings))
        counts = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    except redis.RedisError:
        counts = {}
    routes = []
    for rule in _api_rules(app):
        name = _v1_name(app, rule.endpoint)
        version = "v1" if name else "v2"
        prefix = "/api/agents" if rule.rule.startswith("/api/agents") else "/api/agent"
        mode = settings.migration_mode_for(name) if name else None
        routes.append({
            "route": rule.rule,
            "methods": sorted(m for m in rule.methods or () if m not in ("HEAD", "OPTIONS")),
            "version": version,
            "prefix": prefix,
            "factory_backed": mode != "factory_only",
            "deprecated": version == "v1",
            "mode": mode,
            "sunset": settings.v1_sunset.isoformat() if name else None,
            "successor": V1_ROUTES[name].successor if name else None,
            "calls": counts.get(rule.rule, 0) if name else None,
        })
    return {"mode": settings.migration_mode, "overrides": settings.migration_routes,
            "routes": routes}


def current_rule() -> str:
    return request.url_rule.rule if request.url_rule is not None else request.path

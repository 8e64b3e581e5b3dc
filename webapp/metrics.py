"""GET /metrics: the Prometheus scrape target of a web process (and, on a shared host, of the
workers writing to the same PROMETHEUS_MULTIPROC_DIR)."""
from __future__ import annotations

from flask import Blueprint, Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runlane import metrics
from webapp.apidoc import documented

bp = Blueprint("metrics", __name__)


def init_app(app: Flask) -> None:
    """Serve /metrics and keep the socket gauges fed from this app's router."""
    app.register_blueprint(bp)
    metrics.socket_gauges.track(app.extensions["runlane"].router)


@bp.get("/metrics")
@documented(summary="Prometheus metrics (text exposition format); no per-user data",
            tags=("meta",), auth=False, errors=(), responses={200: None},
            media={200: "text/plain"})
def scrape() -> Response:
    metrics.socket_gauges.refresh()
    return Response(generate_latest(metrics.registry()), content_type=CONTENT_TYPE_LATEST)

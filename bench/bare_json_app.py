"""The baseline of the submission benchmark: a bare Flask JSON route, served by the same
gunicorn/gevent settings as Runlane's web process (`runlane.gunicorn_conf`); and the
hand-rolled glue of the e2e benchmark's reference: a route that sends a bare Celery task."""
from __future__ import annotations

from flask import Flask, Response, request

app = Flask(__name__)


@app.post("/runs")
def submit() -> tuple[Response, int]:
    """Parse the JSON body and answer 202 with a small JSON document, nothing else."""
    body = request.get_json()
    return {"run_id": "bare", "status": "queued", "agent": body.get("agent")}, 202


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@app.post("/glue")
def glue() -> tuple[Response, int]:
    """Hand-rolled glue, the least an HTTP front to Celery does: parse the JSON body, send the
    bare `ping` task (which publishes `payload` on `channel`), answer 202. No auth, no rate
    limit, no database, no router: what Runlane's guarantees are measured against."""
    import bare_celery  # only this route needs Celery (and REDIS_URL)

    body = request.get_json()
    bare_celery.ping.apply_async(args=[body["channel"], body["payload"]])
    return {"status": "queued"}, 202


"""The baseline of the submission benchmark: a bare Flask JSON route, served by the same
gunicorn/gevent settings as Runlane's web process (`runlane.gunicorn_conf`)."""
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

"""The baseline: a bare flask-sock echo app, served by the same gunicorn/gevent settings."""
from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)


@sock.route("/ws")
def echo(ws):  # type: ignore[no-untyped-def]
    while True:
        ws.send(ws.receive())


@app.get("/healthz")
def healthz() -> str:
    return "ok"

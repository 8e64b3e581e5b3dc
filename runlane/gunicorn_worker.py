"""gunicorn's gevent worker, answering gunicorn's own refusals as problem+json.

A request gunicorn refuses before the app sees it (a URI too long, a garbled request line, a
header too large) is answered by `Worker.handle_error`, which writes an HTML page. Every other
error of Runlane's is `application/problem+json` (RFC 9457), so clients parse one shape. This
worker keeps gunicorn's choice of status, reason and message (and its logging) and only
changes the bytes written: gunicorn's answer is caught on its way to the socket and rewritten.
"""
from __future__ import annotations

import html
import json
import re
import socket
from typing import Any, cast

from gunicorn.workers.ggevent import GeventWorker

PROBLEM_JSON = "application/problem+json"
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")
# gunicorn's page: `<h1><p>reason</p></h1>` then the escaped message, then `</body>`.
_MESSAGE = re.compile(rb"</h1>\s*(.*?)\s*</body>", re.S)


def problem_answer(status: int, title: str, detail: str) -> bytes:
    """A complete HTTP/1.1 answer carrying one problem document; the connection closes."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    payload = json.dumps(body).encode()
    head = (f"HTTP/1.1 {status} {title}\r\nConnection: close\r\n"
            f"Content-Type: {PROBLEM_JSON}\r\nContent-Length: {len(payload)}\r\n\r\n")
    return head.encode("latin-1") + payload


def as_problem(answer: bytes) -> bytes:
    """gunicorn's HTML error answer rewritten as problem+json (unchanged if not recognised)."""
    status_line = _STATUS_LINE.match(answer)
    if status_line is None:
        return answer
    status, title = int(status_line.group(1)), status_line.group(2).decode("latin-1")
    message = _MESSAGE.search(answer)
    detail = html.unescape(message.group(1).decode("latin-1")) if message else ""
    if status >= 500:
        detail = ""  # never internals
    return problem_answer(status, title, detail)


class _Captured:
    """The client socket, except that what gunicorn's error page writes is kept, not sent."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.written = b""

    def sendall(self, data: bytes) -> None:
        self.written += data

    def send(self, data: bytes) -> int:
        self.written += data
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class RunlaneGeventWorker(GeventWorker):
    """gunicorn's gevent worker whose error answers are problem+json."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        captured = _Captured(client)
        # _Captured stands in for the socket: sendall/send are its own, the rest delegated.
        super().handle_error(req, cast(socket.socket, captured), addr, exc)
        if not captured.written:
            return
        try:
            client.sendall(as_problem(captured.written))
        except OSError:
            self.log.debug("Failed to send error message.")

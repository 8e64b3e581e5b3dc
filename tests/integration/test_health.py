"""The probes against a real Redis that the test stops and starts again on the same port."""
from __future__ import annotations

from pathlib import Path

import requests

from runlane.embedded import EmbeddedRedis


def test_readyz_answers_503_while_redis_is_stopped_and_200_once_it_is_back(
    server_with, tmp_path: Path,
) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis")
    try:
        base = server_with(redis_url=redis_server.start())
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}

        redis_server.stop()
        down = requests.get(f"{base}/readyz", timeout=10)
        assert down.status_code == 503
        assert down.headers["Content-Type"].startswith("application/problem+json")
        assert down.json()["failing"] == ["redis"]
        alive = requests.get(f"{base}/healthz", timeout=10)  # the process itself is fine
        assert alive.status_code == 200 and alive.json() == {"status": "ok"}

        redis_server.start()  # the same port: the URL the server holds is valid again
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
    finally:
        redis_server.stop()

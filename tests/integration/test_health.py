"""The probes against a real Redis that the test stops and starts again on the same port."""
from __future__ import annotations

import time
from pathlib import Path

import requests

from runlane.embedded import EmbeddedRedis
from tests.support import readyz_until


def test_readyz_answers_503_while_redis_is_stopped_and_200_once_it_is_back(
    server_with, tmp_path: Path,
) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis")
    try:
        base = server_with(redis_url=redis_server.start())
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}

        redis_server.stop()
        down = readyz_until(base, 503)
        assert down.status_code == 503
        assert down.headers["Content-Type"].startswith("application/problem+json")
        assert down.json()["failing"] == ["redis"]
        alive = requests.get(f"{base}/healthz", timeout=10)  # the process itself is fine
        assert alive.status_code == 200 and alive.json() == {"status": "ok"}

        redis_server.start()  # the same port: the URL the server holds is valid again
        assert readyz_until(base, 200).status_code == 200
    finally:
        redis_server.stop()


def _redis_stats(url: str) -> tuple[int, int]:
    """(connections received, PING commands run) of the Redis at `url`, read through a
    connection of its own (counted in the first number)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        connections = int(client.info("stats")["total_connections_received"])
        pings = int(client.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))
        return connections, pings
    finally:
        client.close()


def test_readyz_checks_at_most_once_a_second_on_one_redis_connection(
    server_with, tmp_path: Path,
) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis")
    try:
        url = redis_server.start()
        base = server_with(redis_url=url)
        connections_before, pings_before = _redis_stats(url)
        started = time.monotonic()
        with requests.Session() as http:
            answers = [http.get(f"{base}/readyz", timeout=10) for _ in range(30)]
        elapsed = time.monotonic() - started
        assert all(a.status_code == 200 for a in answers)
        connections_after, pings_after = _redis_stats(url)
        # One probe per second of answers at most (plus the one that opened the window), on
        # one connection kept for the next probe; the second connection is _redis_stats' own.
        assert pings_after - pings_before <= int(elapsed) + 2, (pings_after - pings_before, elapsed)
        assert connections_after - connections_before <= 2
    finally:
        redis_server.stop()

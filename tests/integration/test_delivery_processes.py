"""Delivery across real processes: two gunicorn web processes, a Redis restart, a slow client."""
from __future__ import annotations

import os
import socket
import time

import websocket

from events.eventlog import EventLog
from runlane.embedded import EmbeddedRedis
from tests.processes import free_port, web_process, worker_process
from tests.support import EventSocket, wait_until
from webapp.sockets import CloseCode


def test_client_resumes_on_a_second_web_process_with_exactly_the_missed_events(
    tokens, runlane_worker, tmp_path
):
    env = dict(os.environ)
    with web_process(env, tmp_path / "web1.log") as first_url, \
            web_process(env, tmp_path / "web2.log") as second_url:
        alice = tokens.user("alice")
        one, two = alice.on(first_url), alice.on(second_url)
        sock = one.socket()
        sock.recv_json()
        run = one.submit("t", "demo", {"steps": 10, "delay_ms": 40})["run_id"]
        seen = []
        while len(seen) < 7:
            frame = sock.recv_json()
            if "seq" in frame:
                seen.append(frame)
        sock.close()

        again = two.socket()
        again.recv_json()
        again.send_json({"type": "subscribe", "run_id": run, "after_seq": seen[-1]["seq"]})
        frame = again.recv_json()
        while frame["type"] != "subscribed":
            frame = again.recv_json()
        rest = again.events_until_done({run})
        again.close()
    assert [e["seq"] for e in seen + rest] == list(range(1, 10 * 3 + 3))


def test_clients_get_every_event_in_order_across_a_redis_restart(tokens, tmp_path, db):
    port = free_port()
    redis_server = EmbeddedRedis(tmp_path / "redis", port=port)
    redis_server.start()
    env = dict(os.environ, REDIS_URL=redis_server.url)
    try:
        with worker_process(env, tmp_path / "worker.log"), \
                web_process(env, tmp_path / "web.log") as url:
            alice, bob = tokens.user("alice").on(url), tokens.user("bob").on(url)
            sockets = {u.user_id: u.socket() for u in (alice, bob)}
            for s in sockets.values():
                assert s.recv_json()["type"] == "ready"
            runs = {u.user_id: u.submit("t", "demo", {"steps": 12, "delay_ms": 200})["run_id"]
                    for u in (alice, bob)}
            first = {uid: [sockets[uid].recv_json() for _ in range(3)] for uid in runs}
            log = EventLog(db)
            redis_server.stop()  # events keep being logged; their publishes fail
            at_stop = {uid: len(log.read_after(uid, run_id)) for uid, run_id in runs.items()}
            wait_until(lambda: all(len(log.read_after(uid, run_id)) >= at_stop[uid] + 3
                                   for uid, run_id in runs.items()),
                       30, "each run logged three events while Redis was down")
            redis_server.start()  # same port: web and worker reconnect on their own
            for uid, run_id in runs.items():
                rest = sockets[uid].events_until_done({run_id}, timeout=60)
                events = first[uid] + rest
                assert {e["run_id"] for e in events} == {run_id}
                assert [e["seq"] for e in events] == list(range(1, 12 * 3 + 3)), uid
            for s in sockets.values():
                s.close()
    finally:
        redis_server.stop()


def test_a_client_that_does_not_read_is_cut_off_while_others_are_served(
    server_with, tokens, runlane_worker
):
    # A queue far below the default (1024) so the flood overflows it quickly, yet above one
    # run's burst (17 events, published back to back since the publisher stopped waiting for
    # Redis's replies), which a reading client must get even when its writer is briefly
    # descheduled on a busy machine.
    url = server_with(socket_queue_size=64, socket_send_buffer=16 * 1024)
    slow, fast = tokens.user("slow").on(url), tokens.user("fast").on(url)
    ws_url = url.replace("http://", "ws://") + "/api/agents/v2/ws"
    stalled = EventSocket(websocket.create_connection(
        ws_url, header=[f"Authorization: Bearer {slow.token}"], timeout=30,
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)))
    assert stalled.recv_json()["type"] == "ready"
    normal = fast.socket()
    normal.recv_json()
    # About 1 MB of events: far more than the capped socket buffers and the queue hold.
    flood = [slow.submit("t", "demo", {"steps": 20, "text": "x " * 4999})["run_id"]
             for _ in range(8)]
    mine = fast.submit("t", "demo", {"steps": 5})["run_id"]
    events = normal.events_until_done({mine}, timeout=30)
    assert [e["seq"] for e in events] == list(range(1, 5 * 3 + 3))
    for run_id in flood:
        slow.wait_for_state(run_id, {"completed"}, timeout=60)
    # Now read the stalled socket: buffered frames, then the cut. A client that read nothing
    # for a ping interval after its queue overflowed is shut down without a close frame; one
    # whose writer could still send gets Runlane's 4008 (docs/websocket.md). Which one depends
    # on how long the flood took; a socket that was never cut fails either way (a read times
    # out, or frames keep coming past the deadline).
    deadline = time.monotonic() + 30
    try:
        while stalled.recv_json(timeout=10) is not None and time.monotonic() < deadline:
            pass
        cut: int | str | None = stalled.close_code
    except (websocket.WebSocketConnectionClosedException, ConnectionResetError):
        cut = "shut down"
    assert cut in (CloseCode.SLOW_CONSUMER, "shut down"), cut
    normal.close()

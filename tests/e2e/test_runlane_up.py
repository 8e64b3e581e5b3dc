"""The README's first command, end to end: gunicorn+gevent web, prefork worker, embedded Redis."""
from __future__ import annotations

import signal
import threading

from tests.e2e.conftest import alive, descendants
from tests.support import User, assert_consecutive, wait_until


def test_two_users_stream_their_own_runs_and_ctrl_c_leaves_no_process(deployment):
    alice = User("alice", deployment.token("alice"), deployment.base_url)
    bob = User("bob", deployment.token("bob"), deployment.base_url)
    sockets = {"alice": alice.socket(), "bob": bob.socket()}
    assert sockets["alice"].recv_json()["user_id"] == "alice"
    assert sockets["bob"].recv_json()["user_id"] == "bob"

    runs: dict[str, list[str]] = {"alice": [], "bob": []}

    def submit(user: User) -> None:
        for i in range(3):
            runs[user.user_id].append(
                user.submit(f"thread-{i}", "demo", {"steps": 4, "delay_ms": 10})["run_id"]
            )

    workers = [threading.Thread(target=submit, args=(u,)) for u in (alice, bob)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()

    for user, other in ((alice, "bob"), (bob, "alice")):
        events = sockets[user.user_id].events_until_done(set(runs[user.user_id]), timeout=60)
        assert not {e["run_id"] for e in events} & set(runs[other])
        for run_id in runs[user.user_id]:
            mine = assert_consecutive(events, run_id)
            assert mine[0]["type"] == "agent_started"
            assert mine[-1]["type"] == "agent_completed"
            state = user.get(f"/api/agents/v2/{run_id}/state").json()
            assert state["status"] == "completed"
            assert state["output"]["summary"] == "completed 4 steps"
            assert state["last_seq"] == mine[-1]["seq"]
        # The other user's run ids are 404 for this user.
        assert user.get(f"/api/agents/v2/{runs[other][0]}/state").status_code == 404
    for sock in sockets.values():
        sock.close()

    children = descendants(deployment.process.pid)
    assert len(children) >= 3  # redis-server, celery (and its pool), gunicorn (and its worker)
    log = deployment.log.read_text()
    assert "/api/agents/v2/thread/thread-0/runs" in log  # requests are logged ...
    assert alice.token not in log and bob.token not in log  # ... tokens never
    assert deployment.stop(signal.SIGINT) == 0
    wait_until(lambda: not [pid for pid in children if alive(pid)], 10, "every child ended")


def test_sigterm_stops_runlane_up_and_every_child(deployment):
    children = descendants(deployment.process.pid)
    assert deployment.stop(signal.SIGTERM) == 0
    wait_until(lambda: not [pid for pid in children if alive(pid)], 10, "every child ended")

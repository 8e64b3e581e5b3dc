"""Two users, concurrent runs, one web process: each sees all of its own events and none of
the other's."""
from __future__ import annotations

import threading

from tests.support import assert_consecutive


def test_each_user_receives_only_its_own_events_in_order(users):
    alice, bob = users.user("alice"), users.user("bob")
    sockets = {u.user_id: u.socket() for u in (alice, bob)}
    for sock in sockets.values():
        assert sock.recv_json()["type"] == "ready"

    runs: dict[str, list[str]] = {alice.user_id: [], bob.user_id: []}

    def submit(user):  # type: ignore[no-untyped-def]
        for i in range(3):
            run = user.submit(f"t{i}", "demo", {"steps": 3, "delay_ms": 5})
            runs[user.user_id].append(run["run_id"])

    threads = [threading.Thread(target=submit, args=(u,)) for u in (alice, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for user in (alice, bob):
        other = bob if user is alice else alice
        events = sockets[user.user_id].events_until_done(set(runs[user.user_id]))
        assert {e["run_id"] for e in events} == set(runs[user.user_id])
        assert not {e["run_id"] for e in events} & set(runs[other.user_id])
        for run_id in runs[user.user_id]:
            mine = assert_consecutive(events, run_id)
            assert mine[0]["type"] == "agent_started" and mine[-1]["type"] == "agent_completed"
            assert len(mine) == 11
    for sock in sockets.values():
        sock.close()


def test_user_with_two_sockets_gets_every_event_on_both(users):
    alice = users.user("alice")
    first, second = alice.socket(), alice.socket()
    first.recv_json(), second.recv_json()
    run = alice.submit("t", "demo", {"steps": 2})
    a = first.events_until_done({run["run_id"]})
    b = second.events_until_done({run["run_id"]})
    assert [e["seq"] for e in a] == [e["seq"] for e in b] == list(range(1, 9))
    first.close(), second.close()


def test_closing_one_socket_keeps_the_other_subscribed(users):
    alice = users.user("alice")
    first, second = alice.socket(), alice.socket()
    first.recv_json(), second.recv_json()
    first.close()
    run = alice.submit("t", "echo", "after close")
    events = second.events_until_done({run["run_id"]})
    assert events[-1]["data"]["output"] == "after close"
    second.close()

"""Replays are paged: one client frame never makes the session read or hold more than a page
of a history, however long it is, and the pages still merge with live events exactly once."""
from __future__ import annotations

import json

import pytest

from domain.events import MAX_SEQ
from storage import event_queries
from webapp.socket_session import MAX_REPLAYS, SocketSession

HISTORY = 1500


@pytest.fixture
def history(users, app):  # type: ignore[no-untyped-def]
    """A user whose thread `t` holds a finished run with HISTORY more events after its own."""
    st = app.extensions["runlane"]
    alice = users.user("alice")
    run = alice.submit("t", "echo", {"x": 1})["run_id"]
    assert alice.wait_for_state(run, {"completed"})["status"] == "completed"
    with st.db.transaction() as session:
        for n in range(HISTORY):
            event_queries.append_event(session, alice.user_id, run, "t", "agent_thinking",
                                       {"text": f"old {n}"})
    return alice, run, st


def drain(session: SocketSession, page: int) -> list[dict]:
    frames: list[dict] = []
    while session.replaying:
        step = session.replay_step(page)
        assert len(step) <= page
        frames += [json.loads(f) for f in step]
    return frames


@pytest.mark.parametrize("command", [
    {"type": "subscribe", "thread_id": "t", "after_seq": 0},
    {"type": "subscribe", "run_id": "RUN", "after_seq": 0},
    {"type": "resume", "cursor": 0},
])
def test_one_frame_reads_and_holds_at_most_a_page(history, command):
    alice, run, st = history
    session = SocketSession(user_id=alice.user_id, log=st.events, db=st.db)
    command = {k: (run if v == "RUN" else v) for k, v in command.items()}
    first = [json.loads(f) for f in session.on_command(json.dumps(command))]
    assert len(first) <= 2  # the answer (`subscribed`), never the history
    frames = first + drain(session, 64)
    events = [f for f in frames if "seq" in f]
    assert [e["seq"] for e in events] == list(range(1, HISTORY + 3))
    if command["type"] == "resume":
        assert frames[-1]["type"] == "resumed" and frames[-1]["cursor"] == events[-1]["cursor"]


def test_a_paged_replay_and_live_events_merge_exactly_once(history, server_with):
    alice, _run, _st = history
    base = server_with(socket_queue_size=64)
    me = alice.on(base)
    sock = me.socket()
    assert sock.recv_json()["type"] == "ready"
    sock.send_json({"type": "subscribe", "thread_id": "t", "after_seq": 0})
    live = me.submit("t", "demo", {"steps": 3})["run_id"]
    events = sock.events_until_done({live}, timeout=30)
    old = [e for e in events if e["run_id"] != live]
    assert [e["seq"] for e in old] == list(range(1, HISTORY + 3))
    assert [e["seq"] for e in events if e["run_id"] == live] == list(range(1, 12))
    sock.close()


def test_repeated_subscribes_keep_one_replay_per_run_or_thread(history):
    """A client repeating `subscribe … after_seq` must not queue a replay per frame: the
    newest replaces the older one, so the history is read once."""
    alice, run, st = history
    session = SocketSession(user_id=alice.user_id, log=st.events, db=st.db)
    for _ in range(20):
        session.on_command(json.dumps({"type": "subscribe", "run_id": run, "after_seq": 0}))
        session.on_command(json.dumps({"type": "resume", "cursor": 0}))
    steps, frames = 0, []
    while session.replaying:
        steps += 1
        frames += [json.loads(f) for f in session.replay_step(256)]
    pages = -(-(HISTORY + 2) // 256)
    assert steps <= 2 * pages + 2, steps
    assert [f["seq"] for f in frames if "seq" in f] == list(range(1, HISTORY + 3))
    assert [f["type"] for f in frames].count("resumed") == 1


def test_more_queued_replays_than_the_cap_answer_an_error(history):
    alice, _run, st = history
    session = SocketSession(user_id=alice.user_id, log=st.events, db=st.db)
    threads = [f"cap{n}" for n in range(12)]
    for thread in threads:  # runs the worker need not execute: only their threads matter
        alice.submit(thread, "echo", {"x": 1})
    answers = [json.loads(f)
               for thread in threads
               for f in session.on_command(json.dumps(
                   {"type": "subscribe", "thread_id": thread, "after_seq": 0}))]
    kinds = [a["type"] for a in answers]
    assert kinds.count("subscribed") == MAX_REPLAYS, kinds
    errors = [a for a in answers if a["type"] == "error"]
    assert len(errors) == len(threads) - MAX_REPLAYS
    assert {e["code"] for e in errors} == {"too_many_replays"}


def test_a_thread_replay_after_the_last_possible_seq_reads_no_history(history):
    """The thread's events are filtered by `after_seq` in the query: nothing to page."""
    alice, _run, st = history
    session = SocketSession(user_id=alice.user_id, log=st.events, db=st.db)
    session.on_command(json.dumps({"type": "subscribe", "thread_id": "t",
                                   "after_seq": MAX_SEQ}))
    assert session.replay_step(256) == []
    assert not session.replaying  # one page (an empty one) and done

"""RunlaneClient against the real server and worker: typed answers, problem+json errors, and
the event iterator resuming across real disconnects (a cut socket, a killed web process)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from runlane.client import (
    Event,
    Run,
    RunlaneAPIError,
    RunlaneClient,
    RunlaneConnectionError,
)
from tests.processes import free_port, kill_group, runlane_script, until_serving
from tests.support import TERMINAL, User

# Installed first on sys.meta_path of a fresh interpreter: any attempt to import server-side
# code fails loudly, so a client that works there provably needs none of it.
REFUSE_SERVER_IMPORTS = textwrap.dedent("""
    import sys
    REFUSED = {"flask", "flask_sock", "werkzeug", "celery", "kombu", "sqlalchemy", "redis",
               "gevent", "webapp", "tasks", "storage", "factories", "events", "agents"}

    class RefuseServerImports:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in REFUSED:
                raise ImportError(f"refused to import {name}: client code must not need it")
            return None

    sys.meta_path.insert(0, RefuseServerImports())
""")


def client_for(user: User) -> RunlaneClient:
    return RunlaneClient(user.base_url, user.token)


def stored(user: User, run_id: str) -> list[tuple[int, str]]:
    """What the server logged for the run, read over plain HTTP (not through the client)."""
    body = user.get(f"/api/agents/v2/{run_id}/events", params={"limit": 1000}).json()
    return [(e["seq"], e["type"]) for e in body["items"]]


def test_client_imports_and_runs_without_flask_celery_sqlalchemy_redis_or_gevent(users):
    alice = users.user("alice")
    program = REFUSE_SERVER_IMPORTS + textwrap.dedent("""
        import json
        from runlane.client import RunlaneClient
        with RunlaneClient(sys.argv[1], sys.argv[2]) as client:
            run = client.submit("echo", {"hello": "world"}, thread_id="isolated")
            events = [(e.seq, e.type) for e in client.events(run.run_id)]
            state = client.state(run.run_id)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in REFUSED)
        print(json.dumps({"events": events, "status": state.status, "output": state.output,
                          "loaded": loaded}))
    """)
    done = subprocess.run([sys.executable, "-c", program, alice.base_url, alice.token],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {"events": [[1, "agent_started"], [2, "agent_completed"]],
                      "status": "completed", "output": {"hello": "world"}, "loaded": []}


def test_the_refusing_finder_really_refuses_server_imports():
    """Guards the test above: the finder must make a server import fail."""
    done = subprocess.run([sys.executable, "-c", REFUSE_SERVER_IMPORTS + "import flask"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "refused to import flask" in done.stderr


def test_submit_state_runs_and_agents_return_typed_values(users):
    alice = users.user("alice")
    with client_for(alice) as client:
        run = client.submit("echo", [1, 2], thread_id="typed", metadata={"k": "v"})
        assert isinstance(run, Run) and run.status == "queued" and run.metadata == {"k": "v"}
        finished = client.wait(run.run_id)
        assert (finished.status, finished.output, finished.finished) == ("completed", [1, 2], True)
        assert finished.finished_at is not None and finished.last_seq == 2
        page = client.runs("typed")
        assert [r.run_id for r in page.items] == [run.run_id] and page.next_cursor is None
        assert [r.run_id for r in client.iter_runs("typed")] == [run.run_id]
        assert "demo" in {a.name for a in client.agents()}
        events = list(client.stored_events(run.run_id))
        assert [(e.seq, e.type) for e in events] == stored(alice, run.run_id)
        assert all(isinstance(e, Event) for e in events)


def test_events_yields_every_event_once_in_order_until_the_terminal_one(users):
    alice = users.user("alice")
    with client_for(alice) as client:
        run = client.submit("demo", {"steps": 4, "delay_ms": 20}, thread_id="live")
        seen = [(e.seq, e.type) for e in client.events(run.run_id)]
    assert seen == stored(alice, run.run_id)
    assert [s for s, _ in seen] == list(range(1, 4 * 3 + 3))
    assert seen[-1][1] == "agent_completed"


def test_events_after_a_seq_yields_only_the_later_ones_and_ends_on_finished_runs(users):
    alice = users.user("alice")
    with client_for(alice) as client:
        run = client.submit("demo", {"steps": 2}, thread_id="after")
        last = client.wait(run.run_id).last_seq
        assert [e.seq for e in client.events(run.run_id, after=3)] == list(range(4, last + 1))
        assert list(client.events(run.run_id, after=last)) == []  # nothing more will come


def test_events_resume_without_gap_or_duplicate_after_the_socket_is_cut(users):
    alice = users.user("alice")
    with client_for(alice) as client:
        run = client.submit("demo", {"steps": 8, "delay_ms": 80}, thread_id="cut")
        seqs: list[int] = []
        with client.events(run.run_id) as stream:
            for event in stream:
                seqs.append(event.seq)
                if len(seqs) in (4, 11):  # a real disconnect: the TCP connection is shut down
                    assert stream.connection is not None
                    stream.connection.sock.shutdown(socket.SHUT_RDWR)
            assert stream.reconnects == 2
    assert seqs == [s for s, _ in stored(alice, run.run_id)] == list(range(1, 8 * 3 + 3))


@contextmanager
def web_on(port: int, log: Path) -> Iterator[None]:
    """`runlane web` (gunicorn + gevent) on a given port, in its own process group."""
    with log.open("ab") as out:
        process = subprocess.Popen([runlane_script(), "web", "--port", str(port)],
                                   env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        until_serving(process, f"http://127.0.0.1:{port}/healthz", log)
        yield
    finally:
        kill_group(process)


def test_events_resume_across_a_killed_and_restarted_web_server(users, tmp_path):
    port = free_port()
    alice = users.user("alice").on(f"http://127.0.0.1:{port}")
    seqs: list[int] = []
    with client_for(alice) as client:
        with web_on(port, tmp_path / "web.log"):
            run = client.submit("demo", {"steps": 10, "delay_ms": 150}, thread_id="restart")
            stream = client.events(run.run_id)
            seqs += [next(stream).seq for _ in range(3)]
        # The web process is gone (SIGKILL); the worker keeps logging the run's events.
        with web_on(port, tmp_path / "web.log"), stream:
            seqs += [event.seq for event in stream]
            assert stream.reconnects >= 1
            assert stored(alice, run.run_id)[-1][1] in TERMINAL
            assert seqs == [s for s, _ in stored(alice, run.run_id)]
    assert seqs == list(range(1, 10 * 3 + 3))


def test_problem_json_errors_carry_status_title_detail_and_field_errors(users, live_server):
    alice, bob = users.user("alice"), users.user("bob")
    with client_for(alice) as client:
        with pytest.raises(RunlaneAPIError) as unknown:
            client.submit("no-such-agent", {}, thread_id="t")
        assert unknown.value.status == 422 and unknown.value.title
        assert any(e["path"] == "/agent" for e in unknown.value.errors), unknown.value.errors
        run = client.submit("echo", "mine", thread_id="private")
        client.wait(run.run_id)
        with pytest.raises(RunlaneAPIError) as finished:
            client.cancel(run.run_id)
        assert finished.value.status == 409
    with client_for(bob) as client:
        for attempt in (lambda: client.state(run.run_id),
                        lambda: list(client.events(run.run_id)),
                        lambda: list(client.events(run.run_id, after=1))):
            with pytest.raises(RunlaneAPIError) as foreign:
                attempt()
            assert foreign.value.status == 404
    server = requests.get(f"{live_server}/api/agents/v2/agents",
                          headers={"Authorization": "Bearer nope"}, timeout=10).json()
    with RunlaneClient(live_server, "nope") as client:
        with pytest.raises(RunlaneAPIError) as refused:
            client.agents()
        assert (refused.value.status, refused.value.title, refused.value.detail) == (
            401, server["title"], server["detail"])
        with pytest.raises(RunlaneAPIError) as socket_refused:
            list(client.events(run.run_id))
        assert socket_refused.value.status == 401


def test_an_unreachable_server_raises_a_connection_error():
    url = f"http://127.0.0.1:{free_port()}"
    with RunlaneClient(url, "token") as client:
        with pytest.raises(RunlaneConnectionError) as http:
            client.state("r1")
        assert http.value.status == 0 and "refused" in http.value.detail.lower()
        with pytest.raises(RunlaneConnectionError):
            list(client.events("r1", retries=1))

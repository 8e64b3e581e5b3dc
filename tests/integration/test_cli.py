"""The `runlane` client commands as a user runs them: real subprocesses against the live
server and worker, configured by RUNLANE_URL / RUNLANE_TOKEN. Most run in an interpreter that
refuses to import server code, which proves the commands need none of it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import requests

from tests.integration.test_client import REFUSE_SERVER_IMPORTS
from tests.processes import free_port, runlane_script
from tests.support import User

EVENT_LINE = re.compile(r"^\s*(\d+)\s+([a-z_]+)\b")
CLI = REFUSE_SERVER_IMPORTS + "from runlane.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def runlane(*args: str, user: User | None = None, env: dict[str, str] | None = None,
            script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `runlane ARGS` in a fresh process, as `user` (RUNLANE_URL / RUNLANE_TOKEN)."""
    full = {k: v for k, v in os.environ.items() if k not in ("RUNLANE_URL", "RUNLANE_TOKEN")}
    if user is not None:
        full.update(RUNLANE_URL=user.base_url, RUNLANE_TOKEN=user.token)
    full.update(env or {})
    argv = [runlane_script(), *args] if script else [sys.executable, "-c", CLI, *args]
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=90)


def printed_events(stdout: str) -> list[tuple[int, str]]:
    return [(int(m[1]), m[2]) for m in map(EVENT_LINE.match, stdout.splitlines()) if m]


def stored(user: User, run_id: str) -> list[tuple[int, str]]:
    body = user.get(f"/api/agents/v2/{run_id}/events", params={"limit": 1000}).json()
    return [(e["seq"], e["type"]) for e in body["items"]]


def test_submit_watch_prints_every_event_in_order_and_exits_0_when_the_run_completes(users):
    alice = users.user("alice")
    done = runlane("submit", "--agent", "demo", "--input", '{"steps": 3, "delay_ms": 30}',
                   "--thread", "cli", "--watch", user=alice, script=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    run_id = lines[0].strip()
    events = printed_events(done.stdout)
    assert events == stored(alice, run_id)
    assert [seq for seq, _ in events] == list(range(1, 3 * 3 + 3))
    assert events[-1][1] == "agent_completed"
    assert "calculator(expression=" in done.stdout and "completed 3 steps" in done.stdout
    assert lines[-1] == f"run {run_id} completed"
    assert "Traceback" not in done.stderr


def test_submit_watch_exits_1_when_the_run_fails_and_prints_its_error(users):
    alice = users.user("alice")
    done = runlane("submit", "--agent", "demo", "--input", '{"steps": 4, "fail_at": 3}',
                   "--watch", user=alice)
    assert done.returncode == 1, done.stdout + done.stderr
    run_id = done.stdout.splitlines()[0].strip()
    events = printed_events(done.stdout)
    assert events == stored(alice, run_id) and events[-1][1] == "agent_failed"
    assert done.stdout.splitlines()[-1] == f"run {run_id} failed: demo failed at step 3 as asked"


def test_a_bad_token_prints_the_servers_problem_title_and_detail_without_a_traceback(users):
    alice = users.user("alice")
    problem = requests.post(f"{alice.base_url}/api/agents/v2/thread/t/runs", json={"agent": "demo"},
                            headers={"Authorization": "Bearer not-a-token"}, timeout=10).json()
    done = runlane("submit", "--agent", "demo", "--input", "{}", "--watch",
                   env={"RUNLANE_URL": alice.base_url, "RUNLANE_TOKEN": "not-a-token"})
    assert done.returncode == 2
    assert done.stderr.strip() == f"Error: {problem['title']}: {problem['detail']}"
    assert done.stdout == "" and "Traceback" not in done.stderr


def test_an_unknown_agent_prints_the_problem_and_the_field_error(users):
    alice = users.user("alice")
    done = runlane("submit", "--agent", "no-such-agent", "--input", "{}", "--thread", "x",
                   user=alice)
    assert done.returncode == 2 and done.stdout == ""
    first, *details = done.stderr.strip().splitlines()
    assert first.startswith("Error: Unprocessable input: ")
    assert any(line.strip().startswith("/agent:") for line in details), done.stderr
    assert "Traceback" not in done.stderr
    assert alice.get("/api/agents/v2/thread/x/runs").status_code == 404  # nothing was written


def test_usage_and_connection_errors_exit_2_without_a_traceback(users):
    alice = users.user("alice")
    bad_json = runlane("submit", "--agent", "demo", "--input", "{steps: 3}", user=alice)
    assert bad_json.returncode == 2 and "argument --input: not valid JSON" in bad_json.stderr
    no_token = runlane("state", "r1", env={"RUNLANE_URL": alice.base_url})
    assert no_token.returncode == 2 and no_token.stderr.startswith("Error: No token: ")
    nobody = f"http://127.0.0.1:{free_port()}"
    refused = runlane("runs", env={"RUNLANE_URL": nobody, "RUNLANE_TOKEN": alice.token})
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"Error: Cannot reach the server: {nobody}: Connection refused"
    for done in (bad_json, no_token, refused):
        assert "Traceback" not in done.stderr


def test_runs_state_events_and_cancel_commands(users, tmp_path):
    alice, bob = users.user("alice"), users.user("bob")
    payload = tmp_path / "input.json"
    payload.write_text(json.dumps({"steps": 20, "delay_ms": 300}))
    submitted = runlane("submit", "--agent", "demo", "--input", f"@{payload}", "--thread", "ops",
                        user=alice)
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()

    listed = runlane("runs", "--thread", "ops", user=alice)
    assert listed.returncode == 0 and listed.stdout.split()[0] == run_id
    everywhere = runlane("runs", user=alice)  # no --thread: all of Alice's threads, not Bob's
    assert [line.split()[0] for line in everywhere.stdout.splitlines()] == [run_id]
    state = runlane("state", run_id, user=alice)
    assert state.returncode == 0 and json.loads(state.stdout)["input"] == {"steps": 20,
                                                                           "delay_ms": 300}
    cancelled = runlane("cancel", run_id, user=alice)
    assert cancelled.returncode == 0
    assert cancelled.stdout.split() in ([run_id, "cancelling"], [run_id, "cancelled"])

    followed = runlane("events", run_id, "--follow", user=alice)
    assert followed.returncode == 1, followed.stdout + followed.stderr  # ended, not completed
    assert printed_events(followed.stdout)[-1][1] == "agent_cancelled"
    assert printed_events(followed.stdout) == stored(alice, run_id)
    again = runlane("events", run_id, "--json", "--after", "1", user=alice)
    assert [(e["seq"], e["type"]) for e in map(json.loads, again.stdout.splitlines())] == \
        stored(alice, run_id)[1:]
    assert json.loads(runlane("state", run_id, user=alice).stdout)["status"] == "cancelled"

    foreign = runlane("state", run_id, user=bob)
    assert foreign.returncode == 2 and foreign.stderr.startswith("Error: Not found: ")

"""The state machine as data (domain/status.py) and its one writer (storage/runstate.py).

Pure checks of the table and of the moves built on it, and a reading of the product source
that keeps every write of a run's status inside storage/runstate.py. The moves themselves are
applied to a real database, from every status, in tests/integration/test_runstate.py.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from domain.status import ACTIVE, EXECUTING, TERMINAL, TRANSITIONS, WAITING, RunStatus, sources
from storage import runstate
from storage.runstate import MOVES, IllegalMove, Move

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("agents", "domain", "events", "factories", "runlane", "storage", "tasks", "webapp")
EDGES = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}


def test_every_status_has_a_row_and_the_sets_partition_them():
    assert set(TRANSITIONS) == set(RunStatus)
    assert WAITING | EXECUTING | TERMINAL == set(RunStatus)
    assert not (WAITING & EXECUTING) and not (ACTIVE & TERMINAL)


def test_terminal_statuses_are_final_and_nothing_returns_to_queued():
    assert all(not TRANSITIONS[status] for status in TERMINAL)
    assert all(not TRANSITIONS[status] for status in RunStatus if status.terminal)
    assert sources(RunStatus.QUEUED) == frozenset()
    assert all(s != t for s, t in EDGES)


def test_every_active_status_can_still_reach_an_end():
    for start in ACTIVE:
        seen, todo = set(), [start]
        while todo:
            status = todo.pop()
            if status not in seen:
                seen.add(status)
                todo.extend(TRANSITIONS[status])
        assert seen & TERMINAL, f"{start.value} can never end"


def test_a_cancel_asked_for_is_kept():
    """Once cancelling, a run may still end any way but never runs again."""
    assert RunStatus.RUNNING not in TRANSITIONS[RunStatus.CANCELLING]
    assert RunStatus.RETRYING not in TRANSITIONS[RunStatus.CANCELLING]


def test_the_moves_use_every_allowed_change_and_no_other():
    used = set().union(*(move.pairs() for move in MOVES))
    assert used == EDGES, (
        f"unused: {sorted((s.value, t.value) for s, t in EDGES - used)}; "
        f"illegal: {sorted((s.value, t.value) for s, t in used - EDGES)}")
    assert len({move.name for move in MOVES}) == len(MOVES)


def test_retrying_takes_only_a_running_run():
    """The reaper decides on a row it read a moment before; a cancel asked for since must not
    be turned into another attempt."""
    assert runstate.RETRY.sources == {RunStatus.RUNNING}
    assert runstate.GIVE_UP.sources == {RunStatus.RUNNING}


def test_a_move_outside_the_table_is_refused_when_the_module_loads():
    bad = Move("resurrect", frozenset({RunStatus.COMPLETED}), frozenset({RunStatus.RUNNING}))
    with pytest.raises(IllegalMove, match="resurrect: completed -> running"):
        runstate._check_moves((*MOVES, bad))


def test_a_move_cannot_end_in_a_status_it_does_not_name():
    with pytest.raises(IllegalMove, match="request_cancel cannot end in completed"):
        runstate._update("o", "r", runstate.REQUEST_CANCEL, RunStatus.COMPLETED,
                         attempt=None, lease_before=None, values={}, numbered=False)


# -- nobody else writes a status -------------------------------------------------------------

# What only storage/runstate.py may use: the statements that write a run's status, attempt or
# lease (storage/statements.py builds them, it runs none).
WRITERS = frozenset({"CLAIM_IF_FREE", "CLAIM_NUMBERED", "LOCK_USER", "RENEW_LEASE",
                     "INSERT_RUN", "INSERT_RUN_IF_ROOM", "transition"})
OWNER = "storage/runstate.py"
BUILDER = "storage/statements.py"


def status_writes(path: str, source: str) -> list[str]:
    """Where `source` writes a run's status or runs a status-writing statement: `status=` or a
    `"status"` key in a `.values(...)` call, `UPDATE runs SET status` in SQL text, or a
    statement of WRITERS named."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "values":
            keys = [kw.arg for kw in node.keywords]
            keys += [k.value for arg in node.args if isinstance(arg, ast.Dict)
                     for k in arg.keys if isinstance(k, ast.Constant)]
            if "status" in keys:
                found.append(f"{path}:{node.lineno} .values(status=...)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and "set status" in " ".join(node.value.lower().split()):
            found.append(f"{path}:{node.lineno} SQL setting status")
        elif isinstance(node, ast.Attribute) and node.attr in WRITERS \
                and isinstance(node.value, ast.Name) and node.value.id == "statements":
            found.append(f"{path}:{node.lineno} statements.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "storage.statements":
            found += [f"{path}:{node.lineno} imports {a.name}" for a in node.names
                      if a.name in WRITERS]
    return found


def test_only_runstate_writes_a_status():
    offending = []
    for package in PRODUCT:
        for file in sorted((ROOT / package).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            if path in (OWNER, BUILDER) or "/migrations/" in path:
                continue
            offending += status_writes(path, file.read_text())
    assert not offending, "status written outside storage/runstate.py:\n  " + "\n  ".join(
        offending)


def test_the_reading_finds_each_kind_of_status_write():
    source = textwrap.dedent("""
        from storage.statements import transition
        session.execute(update(Run).values(status="running"))
        session.execute(update(RUNS).values({"status": "failed"}))
        session.execute(text("UPDATE runs  SET   status = 'x'"))
        statements.CLAIM_NUMBERED.scalar(session, {})
        session.execute(update(Run).values(blocked_at=None))
    """)
    found = sorted(status_writes("probe.py", source))
    assert found == ["probe.py:2 imports transition", "probe.py:3 .values(status=...)",
                     "probe.py:4 .values(status=...)", "probe.py:5 SQL setting status",
                     "probe.py:6 statements.CLAIM_NUMBERED"], found

from __future__ import annotations

import pytest

from agents.base import Agent, AgentError
from agents.builtin import DemoAgent, EchoAgent
from agents.tools import default_tools
from domain.context import RunLimits
from domain.status import RunStatus
from tasks.engine import ExecutionEngine
from tests.unit.helpers import CollectingControl, CollectingEmitter, RecordTerminal, make_ctx

TWO_STEPS = [
    "agent_started",
    "agent_thinking", "tool_executing", "tool_completed",
    "agent_thinking", "tool_executing", "tool_completed",
    "agent_completed",
]


def run_engine(agent_obj, *, record=None, **ctx_fields):
    record = record or RecordTerminal()
    emitter = CollectingEmitter()
    engine = ExecutionEngine(make_ctx(**ctx_fields), agent_obj, emitter=emitter,
                             tools=default_tools(), control=CollectingControl(emitter, record))
    return engine.run(), emitter, record


def test_demo_with_two_steps_emits_exactly_the_expected_events():
    outcome, emitter, record = run_engine(DemoAgent(), input={"steps": 2, "text": "a b c"})
    assert emitter.types == TWO_STEPS
    assert outcome.status is RunStatus.COMPLETED
    assert outcome.output == {"steps": 2, "results": [2, 3], "summary": "completed 2 steps"}
    assert record.calls == [(RunStatus.COMPLETED, outcome.output, None)]
    assert emitter.emitted[-1][1] == {"output": outcome.output}


def test_tool_events_carry_the_call_id_arguments_and_result():
    _, emitter, _ = run_engine(DemoAgent(), input={"steps": 2, "text": "a b c"})
    tool_events = [(t, d) for t, d in emitter.emitted if t.startswith("tool_")]
    assert tool_events == [
        ("tool_executing",
         {"tool": "calculator", "call_id": 1, "arguments": {"expression": "1**2+1"}}),
        ("tool_completed", {"tool": "calculator", "call_id": 1, "result": 2}),
        ("tool_executing", {"tool": "word_count", "call_id": 2, "arguments": {"text": "a b c"}}),
        ("tool_completed",
         {"tool": "word_count", "call_id": 2, "result": {"words": 3, "characters": 5}}),
    ]


def test_demo_failing_at_step_two_ends_with_agent_failed_and_records_failed():
    outcome, emitter, record = run_engine(DemoAgent(), input={"steps": 3, "fail_at": 2})
    assert emitter.types == [*TWO_STEPS[:4], "agent_failed"]
    _type, data = emitter.emitted[-1]
    assert "step 2" in data["error"]
    assert outcome.status is RunStatus.FAILED
    assert len(record.calls) == 1
    status, output, error = record.calls[0]
    assert status is RunStatus.FAILED and output is None and "step 2" in error


@pytest.mark.parametrize("agent_input", [{"steps": 2}, {"steps": 1, "fail_at": 1}])
def test_no_terminal_event_when_record_terminal_says_the_run_was_not_running(agent_input):
    outcome, emitter, record = run_engine(DemoAgent(), record=RecordTerminal(False),
                                          input=agent_input)
    assert len(record.calls) == 1
    assert "agent_completed" not in emitter.types and "agent_failed" not in emitter.types
    assert outcome.status is None  # nothing recorded: another attempt or a cancel owns the run


def test_missing_agent_fails_the_run_after_agent_started():
    outcome, emitter, record = run_engine(None, agent="gone")
    assert emitter.types == ["agent_started", "agent_failed"]
    assert "gone" in emitter.emitted[-1][1]["error"]
    assert outcome.status is RunStatus.FAILED
    assert [c[0] for c in record.calls] == [RunStatus.FAILED]


def test_exceeding_max_steps_fails_the_run():
    _outcome, emitter, record = run_engine(DemoAgent(), input={"steps": 2},
                                           limits=RunLimits(max_steps=2))
    # think + tool call are the two allowed steps; the second think is the third.
    assert emitter.types == [*TWO_STEPS[:4], "agent_failed"]
    assert "2 steps" in emitter.emitted[-1][1]["error"]
    assert record.calls[0][0] is RunStatus.FAILED


def test_max_steps_exactly_reached_still_completes():
    outcome, emitter, _ = run_engine(DemoAgent(), input={"steps": 2},
                                     limits=RunLimits(max_steps=4))
    assert outcome.status is RunStatus.COMPLETED and emitter.types == TWO_STEPS


def test_echo_returns_its_input_as_output():
    outcome, emitter, _ = run_engine(EchoAgent(), agent="echo", input=[1, "two", None])
    assert outcome.output == [1, "two", None]
    assert emitter.types == ["agent_started", "agent_completed"]
    assert emitter.emitted[0][1] == {"agent": "echo", "input": [1, "two", None], "attempt": None}


class _Unserialisable(Agent):
    name = "bad"
    description = "returns a set"

    def run(self, ctx):
        return {1, 2}


class _UnknownTool(Agent):
    name = "tooly"
    description = "calls a tool that does not exist"

    def run(self, ctx):
        return ctx.call_tool("shell", cmd="rm -rf /")


class _BadToolArgs(Agent):
    name = "badargs"
    description = "calls a tool with an argument it does not take"

    def run(self, ctx):
        return ctx.call_tool("calculator", expression="1+1", extra=True)


class _Crashing(Agent):
    name = "crash"
    description = "raises a non-agent error"

    def run(self, ctx):
        raise KeyError("boom")


def test_non_json_output_fails_the_run():
    outcome, emitter, _ = run_engine(_Unserialisable(), agent="bad")
    assert outcome.status is RunStatus.FAILED and emitter.types[-1] == "agent_failed"


def test_unknown_tool_fails_the_run_without_tool_events():
    outcome, emitter, _ = run_engine(_UnknownTool(), agent="tooly")
    assert emitter.types == ["agent_started", "agent_failed"]
    assert "shell" in outcome.error


def test_tool_called_with_wrong_arguments_completes_the_tool_call_with_an_error():
    outcome, emitter, _ = run_engine(_BadToolArgs(), agent="badargs")
    assert emitter.types == ["agent_started", "tool_executing", "tool_completed", "agent_failed"]
    assert "error" in emitter.emitted[2][1] and "result" not in emitter.emitted[2][1]
    assert outcome.status is RunStatus.FAILED


def test_an_unexpected_agent_exception_fails_the_run_instead_of_raising():
    outcome, emitter, _ = run_engine(_Crashing(), agent="crash")
    assert outcome.status is RunStatus.FAILED and "boom" in outcome.error
    assert emitter.types[-1] == "agent_failed"


def test_a_failing_observer_does_not_break_the_run():
    class Broken:
        def on_event(self, event):
            raise RuntimeError("observer down")

    class Seen:
        def __init__(self):
            self.seqs = []

        def on_event(self, event):
            self.seqs.append(event.seq)

    seen, emitter = Seen(), CollectingEmitter()
    engine = ExecutionEngine(make_ctx(input={"steps": 1}), DemoAgent(), emitter=emitter,
                             tools=default_tools(), control=CollectingControl(emitter),
                             observers=[Broken(), seen])
    assert engine.run().status is RunStatus.COMPLETED
    assert seen.seqs == [1, 2, 3, 4, 5]


def test_agent_error_is_an_exception_the_engine_reports_by_message():
    class Explicit(Agent):
        name = "explicit"
        description = "fails on purpose"

        def run(self, ctx):
            raise AgentError("no luck today")

    _, emitter, _ = run_engine(Explicit(), agent="explicit")
    assert emitter.emitted[-1] == ("agent_failed", {"error": "no luck today"})


def _controlled(exc: BaseException):
    record = RecordTerminal()
    emitter = CollectingEmitter()
    engine = ExecutionEngine(make_ctx(input={"steps": 5}), DemoAgent(), emitter=emitter,
                             tools=default_tools(),
                             control=CollectingControl(emitter, record, exc=exc))
    return engine.run(), emitter, record


def test_a_cancel_seen_at_a_step_ends_the_run_cancelled():
    from tasks.lifecycle import RunCancelled

    outcome, emitter, record = _controlled(RunCancelled("cancelled by its owner"))
    assert outcome.status is RunStatus.CANCELLED
    assert emitter.types[-1] == "agent_cancelled"
    assert record.calls[0][0] is RunStatus.CANCELLED


@pytest.mark.parametrize("kind", ["soft_check", "celery_soft_limit"])
def test_a_soft_time_limit_ends_the_run_timed_out(kind):
    from celery.exceptions import SoftTimeLimitExceeded

    from tasks.lifecycle import RunTimedOut

    exc = RunTimedOut("soft limit") if kind == "soft_check" else SoftTimeLimitExceeded()
    outcome, emitter, _record = _controlled(exc)
    assert outcome.status is RunStatus.TIMED_OUT
    assert emitter.types[-1] == "agent_timed_out"


def test_a_superseded_attempt_stops_without_writing_anything():
    from domain.errors import Superseded

    outcome, emitter, record = _controlled(Superseded("run-1"))
    assert outcome.status is None
    assert record.calls == []
    assert not {"agent_completed", "agent_failed", "agent_cancelled"} & set(emitter.types)

from __future__ import annotations

import json

import pytest

from agents.builtin import EchoAgent
from agents.registry import default_registry
from agents.tools import default_tools
from domain.errors import UnprocessableInput
from tasks.engine import ExecutionEngine
from tests.unit.helpers import CollectingControl, CollectingEmitter, make_ctx
from webapp.problems import http_status
from webapp.runs import RunService


@pytest.fixture
def service():
    return RunService(db=None, agents=default_registry(), dispatcher=None, bridges=None,
                      max_queued=100)


def test_unknown_agent_is_unprocessable_with_agent_path(service):
    with pytest.raises(UnprocessableInput) as info:
        service.validate_input("nope", {})
    assert http_status(info.value) == 422
    assert info.value.extra["errors"][0]["path"] == "/agent"
    assert "nope" in info.value.detail


def test_demo_input_errors_list_each_failing_path(service):
    with pytest.raises(UnprocessableInput) as info:
        service.validate_input("demo", {"steps": "x", "bogus": 1})
    errors = info.value.extra["errors"]
    paths = [e["path"] for e in errors]
    assert "/input/steps" in paths
    assert len(errors) == 2
    assert any("bogus" in e["message"] for e in errors)
    assert all(e["message"] for e in errors)


@pytest.mark.parametrize("value", [{}, {"steps": 2, "fail_at": 1, "text": "hi"}])
def test_valid_demo_input_passes(service, value):
    assert service.validate_input("demo", value) is None


def test_demo_input_that_is_not_an_object_is_unprocessable(service):
    with pytest.raises(UnprocessableInput):
        service.validate_input("demo", None)


ANY_JSON = [None, True, False, 0, -7, 1.5, "", "x", "ünïcode ✓", [], {}, [1, {"a": []}],
            {"nested": {"list": [None, "s", 2.25, False]}, "empty": ""}]


@pytest.mark.parametrize("value", ANY_JSON, ids=lambda v: json.dumps(v))
def test_echo_accepts_any_json_value_and_returns_it_unchanged(service, value):
    assert service.validate_input("echo", value) is None
    emitter = CollectingEmitter()
    engine = ExecutionEngine(make_ctx(agent="echo", input=value), EchoAgent(), emitter=emitter,
                             tools=default_tools(), control=CollectingControl(emitter))
    outcome = engine.run()
    assert emitter.types == ["agent_started", "agent_completed"]
    assert outcome.output == value and type(outcome.output) is type(value)
    assert json.loads(json.dumps(outcome.output)) == value  # as stored and sent


def test_out_of_range_steps_are_reported_at_their_path(service):
    with pytest.raises(UnprocessableInput) as info:
        service.validate_input("demo", {"steps": 21, "delay_ms": -1})
    assert [e["path"] for e in info.value.extra["errors"]] == ["/input/delay_ms", "/input/steps"]


def test_errors_on_the_input_object_itself_point_at_input(service):
    with pytest.raises(UnprocessableInput) as info:
        service.validate_input("demo", {"bogus": 1})
    assert [e["path"] for e in info.value.extra["errors"]] == ["/input"]

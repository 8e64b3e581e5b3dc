from __future__ import annotations

import pytest

from agents.builtin import DemoAgent, EchoAgent
from agents.registry import AgentRegistry, default_registry
from agents.tools import default_tools
from domain.errors import UnprocessableInput
from events.channels import user_channel
from factories.agents import AgentInstanceFactory
from factories.bridge import WebSocketBridgeFactory
from factories.engine import ExecutionEngineFactory
from tasks.engine import ExecutionEngine
from tests.unit.helpers import (
    CollectingControl,
    CollectingEmitter,
    MemoryLog,
    RecordingPublisher,
    make_ctx,
)

PREFIX = "rl-test"


def test_agent_factory_creates_a_new_instance_for_each_run():
    factory = AgentInstanceFactory(default_registry())
    first, second = factory.create(make_ctx(run_id="r1")), factory.create(make_ctx(run_id="r2"))
    assert isinstance(first, DemoAgent) and isinstance(second, DemoAgent)
    assert first is not second


def test_agent_factory_creates_the_agent_named_by_the_context():
    factory = AgentInstanceFactory(default_registry())
    assert isinstance(factory.create(make_ctx(agent="echo")), EchoAgent)


def test_agent_factory_rejects_an_unknown_agent():
    factory = AgentInstanceFactory(default_registry())
    with pytest.raises(UnprocessableInput, match="nope"):
        factory.create(make_ctx(agent="nope"))


def test_agent_factory_only_knows_its_own_registry():
    factory = AgentInstanceFactory(AgentRegistry([EchoAgent]))
    with pytest.raises(UnprocessableInput):
        factory.create(make_ctx(agent="demo"))


def test_bridges_of_different_users_publish_on_their_own_user_channels():
    publisher = RecordingPublisher()
    factory = WebSocketBridgeFactory(log=MemoryLog(), publisher=publisher, channel_prefix=PREFIX)
    alice = factory.create(make_ctx(user_id="alice", run_id="ra"))
    bob = factory.create(make_ctx(user_id="bob", run_id="rb"))
    assert alice.channel == user_channel(PREFIX, "alice")
    assert bob.channel == user_channel(PREFIX, "bob")
    assert alice.channel != bob.channel
    assert (alice.user_id, alice.run_id) == ("alice", "ra")
    assert (bob.user_id, bob.run_id) == ("bob", "rb")
    alice.emit("agent_thinking", {"text": "mine"})
    bob.emit("agent_thinking", {"text": "his"})
    assert [channel for channel, _ in publisher.published] == [alice.channel, bob.channel]
    assert '"mine"' in publisher.published[0][1] and '"his"' in publisher.published[1][1]


def test_two_runs_of_the_same_user_get_distinct_bridges_on_the_same_channel():
    factory = WebSocketBridgeFactory(log=MemoryLog(), publisher=RecordingPublisher(),
                                     channel_prefix=PREFIX)
    first = factory.create(make_ctx(user_id="alice", run_id="r1"))
    second = factory.create(make_ctx(user_id="alice", run_id="r2"))
    assert first is not second
    assert first.channel == second.channel == user_channel(PREFIX, "alice")
    assert (first.run_id, second.run_id) == ("r1", "r2")


def test_engine_factory_creates_distinct_engines_bound_to_their_own_context():
    factory = ExecutionEngineFactory(engine=ExecutionEngine, tools=default_tools())
    ctx1, ctx2 = make_ctx(user_id="alice", run_id="r1"), make_ctx(user_id="bob", run_id="r2")
    agent1, agent2 = DemoAgent(), DemoAgent()
    emitter1, emitter2 = CollectingEmitter(), CollectingEmitter()
    e1 = factory.create(ctx1, agent1, emitter1, CollectingControl(emitter1))
    e2 = factory.create(ctx2, agent2, emitter2, CollectingControl(emitter2))
    assert e1 is not e2
    assert e1.ctx is ctx1 and e2.ctx is ctx2
    assert e1.agent is agent1 and e2.agent is agent2


def test_engine_factory_builds_the_engine_class_it_is_handed():
    """factories/ never imports the engine (tasks/ is above it): the worker hands it the
    class, and the factory passes each attempt's parts through unchanged."""
    built = []

    class FakeEngine:
        def __init__(self, ctx, agent, *, emitter, tools, control):
            built.append((ctx, agent, emitter, tools, control))

    tools = default_tools()
    factory = ExecutionEngineFactory(engine=FakeEngine, tools=tools)
    ctx, agent, emitter, control = make_ctx(), DemoAgent(), CollectingEmitter(), object()
    engine = factory.create(ctx, agent, emitter, control)  # type: ignore[arg-type]
    assert isinstance(engine, FakeEngine)
    assert built == [(ctx, agent, emitter, tools, control)]


def test_time_limits_come_from_configuration_then_the_agent_then_defaults():
    from agents.base import Agent
    from agents.registry import AgentRegistry
    from domain.context import RunLimits
    from factories.agents import AgentInstanceFactory

    class Quick(Agent):
        name, description = "quick", "test agent"
        soft_time_limit, hard_time_limit = 5.0, 8.0

        def run(self, ctx):
            return None

    factory = AgentInstanceFactory(
        AgentRegistry([Quick, DemoAgent]),
        default_limits=RunLimits(soft_time_limit=100, hard_time_limit=120),
        time_limits={"demo": (30.0, 20.0)},
    )
    quick, demo = factory.limits("quick"), factory.limits("demo")
    assert (quick.soft_time_limit, quick.hard_time_limit) == (5.0, 8.0)
    assert (demo.soft_time_limit, demo.hard_time_limit) == (30.0, 30.0)  # hard never below soft
    other = factory.limits("unknown")
    assert (other.soft_time_limit, other.hard_time_limit) == (100, 120)

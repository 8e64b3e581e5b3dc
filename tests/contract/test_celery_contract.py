"""Celery internals Runlane relies on, against the installed Celery and a real redis-server:
tasks/celery_app.py (the app's AMQP class and its lazy settings), tasks/dispatch.py
(`declare=[]`) and runlane/logs.py (the names of Celery's per-task loggers).

Pinned: `Celery(amqp=...)` builds the app's broker connections from that class's
`Connection`; `config_from_object` takes a `PromiseProxy` and evaluates it at the first read
of a setting, once; `send_task(..., declare=[])` hands the empty list to kombu's
`Producer.publish`, which then declares nothing, and the message still arrives; the loggers
that write a line per task are named as runlane/logs.py quiets them.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.app.amqp import AMQP
from celery.local import PromiseProxy
from kombu import Producer

from runlane.logs import CELERY_TASK_LOGGERS
from tasks.broker import TRANSPORT, BrokerConnection

ADAPTERS = "tasks/celery_app.py"


class _AMQP(AMQP):
    Connection = BrokerConnection


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    app = Celery(f"contract-{uuid.uuid4().hex[:8]}", amqp=_AMQP, set_as_current=False)
    app.conf.update(broker_url=redis_url, broker_transport=TRANSPORT, task_ignore_result=True)
    yield app
    app.close()


def test_the_app_builds_its_broker_connections_from_its_amqp_class(app: Celery) -> None:
    assert isinstance(app.amqp, _AMQP), "Celery(amqp=...) no longer chooses the AMQP class"
    with app.connection_for_write() as conn:
        assert isinstance(conn, BrokerConnection), (
            "the app's connections are no longer built from AMQP.Connection: "
            f"{ADAPTERS} shows the broker through it")
        assert conn.as_uri().startswith("redis://"), conn.as_uri()


def test_settings_given_as_a_promise_are_read_once_at_first_use(redis_url: str) -> None:
    calls: list[int] = []

    def settings() -> dict[str, Any]:
        calls.append(1)
        return {"broker_url": redis_url, "task_default_queue": "contract-promised"}

    app = Celery("contract-lazy", set_as_current=False)
    app.config_from_object(PromiseProxy(settings))
    try:
        assert calls == [], "config_from_object() evaluated the promise at once"
        assert app.conf.task_default_queue == "contract-promised"
        assert app.conf.broker_url == redis_url
        assert calls == [1], f"the settings promise was evaluated {len(calls)} times"
    finally:
        app.close()


def test_send_task_with_an_empty_declare_declares_nothing_and_still_delivers(
        app: Celery, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = f"contract-{uuid.uuid4().hex[:12]}"
    declared: list[Any] = []
    given: list[Any] = []
    publish, maybe_declare = Producer.publish, Producer.maybe_declare

    def spy_publish(self: Producer, *args: Any, **kwargs: Any) -> Any:
        given.append(kwargs.get("declare"))
        return publish(self, *args, **kwargs)

    def spy_declare(self: Producer, entity: Any, *args: Any, **kwargs: Any) -> Any:
        declared.append(entity)
        return maybe_declare(self, entity, *args, **kwargs)

    monkeypatch.setattr(Producer, "publish", spy_publish)
    monkeypatch.setattr(Producer, "maybe_declare", spy_declare)
    app.send_task("contract.noop", args=[1], queue=queue, ignore_result=True)
    assert declared, "send_task() no longer declares its queue by default"
    declared.clear()
    given.clear()
    app.send_task("contract.noop", args=[2], queue=queue, ignore_result=True, declare=[])
    assert given == [[]], (
        f"send_task(declare=[]) reached Producer.publish as declare={given!r}: "
        "tasks/dispatch.py's skip of the per-send queue check no longer works")
    assert declared == [], f"declare=[] still declared {declared!r}"
    raw = redis.Redis.from_url(redis_url)
    try:
        assert raw.llen(queue) == 2, "a message sent with declare=[] did not arrive"
    finally:
        raw.delete(queue)
        raw.close()


@pytest.mark.parametrize("name", CELERY_TASK_LOGGERS)
def test_the_per_task_loggers_runlane_quiets_exist(name: str) -> None:
    module = __import__(name, fromlist=["logger"])
    logger = getattr(module, "logger", None)
    assert isinstance(logger, logging.Logger) and logger.name == name, (
        f"{name} no longer logs through a logger named {name!r}: runlane/logs.py quiets "
        "Celery's per-task lines by that name")

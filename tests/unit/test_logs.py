"""The log formats and the ids they carry: JSON in production, readable text in development."""
from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from runlane import logs
from runlane.settings import Settings, load

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWhlcmU"


def settings(**values: object) -> Settings:
    return load(values)


@pytest.fixture
def capture(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own with one handler set up the way Runlane sets up its handlers."""
    fmt = getattr(request, "param", "json")
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logs.adopt(handler, settings(log_format=fmt))
    logger = logging.getLogger(f"test.logs.{request.node.name}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, buf
    logger.removeHandler(handler)


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_carry_the_ids_bound_for_the_run(capture):
    logger, buf = capture
    with logs.bound(run_id="run-1", user_id="alice", request_id="req-1"):
        logger.info("run started: agent %s", "demo")
    logger.info("between runs")
    first, second = lines(buf)
    assert first["message"] == "run started: agent demo"
    assert (first["run_id"], first["user_id"], first["request_id"]) == ("run-1", "alice", "req-1")
    assert first["level"] == "INFO" and first["logger"].startswith("test.logs.")
    assert str(first["ts"]).endswith("Z")
    assert not {"run_id", "user_id", "request_id"} & second.keys()


def test_each_thread_sees_only_the_ids_it_bound(capture):
    logger, buf = capture
    barrier = threading.Barrier(2)

    def work(user: str) -> None:
        with logs.bound(user_id=user, run_id=f"run-of-{user}"):
            barrier.wait()  # both bound at once: a shared variable would mix them up
            logger.info("working")

    threads = [threading.Thread(target=work, args=(u,)) for u in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((line["user_id"], line["run_id"]) for line in lines(buf)) == [
        ("alice", "run-of-alice"), ("bob", "run-of-bob")]


def test_unbind_restores_the_outer_ids(capture):
    logger, buf = capture
    outer = logs.bind(request_id="outer")
    try:
        inner = logs.bind(request_id="inner", run_id="r")
        logs.unbind(inner)
        logger.info("after")
    finally:
        logs.unbind(outer)
    (line,) = lines(buf)
    assert line["request_id"] == "outer" and "run_id" not in line


def test_a_token_in_a_message_or_traceback_is_masked(capture):
    logger, buf = capture
    try:
        raise ValueError(f"bad header Bearer {JWT}")
    except ValueError:
        logger.exception("refused %s", JWT)
    text = buf.getvalue()
    assert JWT not in text
    (line,) = lines(buf)
    assert line["message"] == "refused [token]" and "[token]" in str(line["exc"])


@pytest.mark.parametrize("capture", ["text"], indirect=True)
def test_text_lines_are_readable_and_name_the_ids(capture):
    logger, buf = capture
    with logs.bound(run_id="run-1", user_id="alice"):
        logger.warning("lease renewal failed")
    line = buf.getvalue().strip()
    assert line.endswith("WARNING test.logs.test_text_lines_are_readable_and_name_the_ids[text]: "
                         "lease renewal failed [run_id=run-1 user_id=alice]")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@pytest.mark.parametrize(("env", "fmt", "expected"), [
    ("production", "auto", True), ("development", "auto", False),
    ("development", "json", True), ("production", "text", False),
])
def test_json_is_the_production_default_and_can_be_chosen(env, fmt, expected):
    assert logs.wants_json(settings(env=env, log_format=fmt, secret_key="k" * 40)) is expected


def test_configure_replaces_its_own_handler_and_keeps_others():
    root = logging.getLogger()
    level = root.level
    other = logging.NullHandler()
    root.addHandler(other)
    try:
        first = logs.configure(settings(), stream=io.StringIO())
        second = logs.configure(settings(), stream=io.StringIO())
        assert first not in root.handlers and second in root.handlers and other in root.handlers
    finally:
        for handler in (other, *[h for h in root.handlers if getattr(h, "_runlane", False)]):
            root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize(("level", "celery_level"), [
    ("INFO", logging.WARNING), ("WARNING", logging.WARNING), ("DEBUG", logging.NOTSET),
])
def test_celerys_per_task_lines_only_at_debug(level, celery_level):
    loggers = [logging.getLogger(name) for name in logs.CELERY_TASK_LOGGERS]
    before = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.NOTSET)
        logs.quiet_celery_task_lines(settings(log_level=level))
        assert [logger.level for logger in loggers] == [celery_level] * len(loggers)
    finally:
        for logger, old in zip(loggers, before, strict=True):
            logger.setLevel(old)


@pytest.mark.parametrize("capture", ["text"], indirect=True)
def test_text_lines_escape_control_characters_so_no_line_can_be_forged(capture):
    logger, buf = capture
    forged = "x\n2026-12-02 00:00:00,000 INFO runlane.access: FORGED\r\x1b[2J\x00\u2028"
    with logs.bound(run_id="r\n1", user_id="alice\n2026 INFO FORGED"):
        logger.warning("GET %s", f"/api/{forged}")
        try:
            raise ValueError(forged)
        except ValueError:
            logger.exception("failed on %s", forged)
    written = buf.getvalue().splitlines()
    records = [line for line in written if not line.startswith(" ")]
    assert len(records) == 2, written  # one line per record; traceback lines are indented
    assert "\\n2026-12-02" in records[0] and "\\r\\x1b[2J\\x00\\u2028" in records[0]
    assert "run_id=r\\n1 user_id=alice\\n2026 INFO FORGED" in records[0]
    assert not any("FORGED" in line and not line.startswith(" ") and "\\n" not in line
                   for line in written)


@pytest.mark.parametrize("capture", ["text"], indirect=True)
def test_text_lines_keep_ordinary_text_as_it_is(capture):
    logger, buf = capture
    logger.info("caf\u00e9 \u2192 %s\ttab", "ok")
    assert buf.getvalue().rstrip("\n").endswith("caf\u00e9 \u2192 ok\\ttab")

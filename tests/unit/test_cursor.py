from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.errors import InvalidInput
from storage.models import Run
from webapp.runs import decode_cursor, encode_cursor


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("created_at", [
    datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
    datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=-5))),
])
def test_decode_cursor_inverts_encode_cursor(created_at):
    run = Run(id="0b9f-run", created_at=created_at)
    cursor = encode_cursor(run)
    assert "=" not in cursor
    decoded_at, run_id = decode_cursor(cursor)
    assert (decoded_at, run_id) == (created_at, "0b9f-run")
    assert decoded_at.utcoffset() == created_at.utcoffset()


@pytest.mark.parametrize("cursor", [
    "!!!", "a", "é", b64(b"not json"), b64(b"[1]"), b64(b"[1, 2]"), b64(b'{"a": 1, "b": 2}'),
    b64(b'["not a date", "r"]'), b64(b'["2025-01-01", "r", 3]'), b64(b"\xff\xfe"), b64(b"null"),
])
def test_decode_cursor_rejects_garbage_with_invalid_input(cursor):
    with pytest.raises(InvalidInput):
        decode_cursor(cursor)


def test_decode_cursor_rejects_deeply_nested_json_with_invalid_input():
    with pytest.raises(InvalidInput):
        decode_cursor(b64(b"[" * 1500))


def test_decode_cursor_rejects_a_timestamp_without_timezone():
    with pytest.raises(InvalidInput):
        decode_cursor(b64(b'["2025-01-01T00:00:00", "r"]'))

"""Property-based run of schemathesis against the live app with a valid token: no 5xx, and
every answer (status, content type, body, headers) conforms to the OpenAPI document."""
from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

MAX_EXAMPLES = 12  # per operation: bounded, so the suite stays within CI's time
# Submissions get more: together more than the default per-minute limit, so the run shows
# that limit does not turn them away here (that limit has tests of its own).
SUBMIT_EXAMPLES = 30
# Far above what the fuzz run sends, so submissions are exercised, not answered 429.
FUZZ_LIMITS = {"submit_rate_per_minute": 1_000_000, "max_queued_per_user": 1_000_000}


def operations(base_url: str) -> list:  # type: ignore[type-arg]
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 15  # one documented prefix: 7 v1 + 8 v2 + the meta routes
    return [op for op in found if not op.path.endswith("/ws")]  # frames are fuzzed elsewhere


def bounded(case):  # type: ignore[no-untyped-def]
    """Keep generated demo runs short (still schema-valid) so the fuzz run's load is bounded.
    Opaque pagination cursors cannot be generated valid; test_v2_runs covers them."""
    if case.query:
        case.query.pop("cursor", None)
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("input"), dict):
        if isinstance(body["input"].get("delay_ms"), int):
            body["input"]["delay_ms"] = min(body["input"]["delay_ms"], 10)
    return case


def conformance_check(operation, examples: int, base_url: str, user,  # type: ignore[no-untyped-def]
                      statuses: Counter[int]):
    """The property test of one operation; it counts each answer's status in `statuses`."""

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy().map(bounded))
    def check(case):  # type: ignore[no-untyped-def]
        response = case.call(base_url=base_url, headers=user.headers, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response)

    return check


@pytest.fixture
def fuzz_server(server_with, runlane_worker) -> str:  # type: ignore[no-untyped-def]
    """The app with per-user limits raised: the rate limit has its own tests."""
    return server_with(**FUZZ_LIMITS)  # type: ignore[no-any-return]


@pytest.fixture
def fuzz_user(users, fuzz_server):  # type: ignore[no-untyped-def]
    return users.user("fuzz").on(fuzz_server)


def test_every_operation_conforms_and_never_fails_with_5xx(fuzz_user, fuzz_server):
    failures: list[str] = []
    answered: dict[str, Counter[int]] = {}
    for operation in operations(fuzz_server):
        name = f"{operation.method.upper()} {operation.path}"
        statuses = answered.setdefault(name, Counter())

        examples = SUBMIT_EXAMPLES if operation.method.upper() == "POST" else MAX_EXAMPLES
        check = conformance_check(operation, examples, fuzz_server, fuzz_user, statuses)
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, report all
            failures.append(f"{name}: {exc}")
    assert not failures, "\n\n".join(failures)
    # The submissions were exercised, not turned away by a per-user limit.
    limited = {name: dict(s) for name, s in answered.items() if s[429]}
    assert not limited, limited

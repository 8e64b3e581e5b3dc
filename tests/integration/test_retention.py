"""Retention: the purge job, run by a real worker, deletes only events older than the limit."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from storage.models import EventRecord
from tests.support import wait_until


def test_purge_task_removes_events_past_retention_and_keeps_recent_ones(users, app):
    from tasks.maintenance import purge_events

    alice = users.user("alice")
    old = alice.submit("t", "echo", "old")["run_id"]
    new = alice.submit("t", "echo", "new")["run_id"]
    for run_id in (old, new):
        alice.wait_for_state(run_id, {"completed"})
    db = app.extensions["runlane"].db
    with db.session() as session:
        session.execute(update(EventRecord).where(EventRecord.run_id == old)
                        .values(ts=datetime.now(UTC) - timedelta(days=8)))

    def count(run_id: str) -> int:
        with db.session() as session:
            return int(session.execute(
                select(func.count()).where(EventRecord.run_id == run_id)).scalar_one())

    purge_events.delay()  # through the broker to the worker, as beat sends it
    wait_until(lambda: count(old) == 0, 20, "the old run's events are purged", interval=0.1)
    assert count(new) == 2
    assert alice.get(f"/api/agents/v2/{new}/events").json()["items"][0]["seq"] == 1


def test_celery_beat_schedules_the_purge_hourly():
    import tasks

    entry = tasks.app.conf.beat_schedule["purge-events"]
    assert entry["task"] == "runlane.purge_events" and entry["schedule"] == 3600.0
    assert "runlane.purge_events" in tasks.app.tasks

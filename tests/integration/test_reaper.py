"""The reaper's decisions, against the real database: exhausted attempts fail, hard deadlines
time out, runs never picked up fail after the queue age, a live lease is left alone."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from storage.models import Run, utcnow


def _reaper(app, **overrides):  # type: ignore[no-untyped-def]
    from runlane.settings import load
    from tasks.reaper import Reaper

    st = app.extensions["runlane"]
    settings = load(overrides)
    return Reaper(db=st.db, settings=settings, dispatcher=st.runs._dispatcher,
                  bridges=st.runs._bridges)


def _force(app, run_id: str, **values) -> None:  # type: ignore[no-untyped-def]
    with app.extensions["runlane"].db.session() as session:
        session.execute(update(Run).where(Run.id == run_id).values(**values))


def _finished_run(user) -> str:  # type: ignore[no-untyped-def]
    """A real run, already finished, so no worker touches it while its row is rewritten."""
    run = user.submit("t", "echo", 1)["run_id"]
    user.wait_for_state(run, {"completed"})
    return run


def _events(user, run_id):  # type: ignore[no-untyped-def]
    return [e["type"] for e in user.get(f"/api/agents/v2/{run_id}/events").json()["items"]]


def test_a_run_whose_worker_was_lost_on_every_attempt_ends_failed(app, users):
    alice = users.user("alice")
    run = _finished_run(alice)
    past = utcnow() - timedelta(seconds=5)
    _force(app, run, status="running", attempt=3, lease_expires_at=past,
           deadline_at=utcnow() + timedelta(hours=1))
    # The in-process worker's own reaper may get there first (it shares the database), so
    # the run's end is what is checked, not which reaper's tick counted it.
    _reaper(app, max_attempts=3).tick()
    state = alice.get(f"/api/agents/v2/{run}/state").json()
    assert state["status"] == "failed" and "3 attempts" in state["error"]
    assert _events(alice, run)[-1] == "agent_failed"


def test_a_lapsed_run_past_its_hard_deadline_ends_timed_out(app, users):
    alice = users.user("alice")
    run = _finished_run(alice)
    past = utcnow() - timedelta(seconds=5)
    _force(app, run, status="running", attempt=1, lease_expires_at=past, deadline_at=past)
    _reaper(app).tick()
    assert alice.get(f"/api/agents/v2/{run}/state").json()["status"] == "timed_out"
    assert _events(alice, run)[-1] == "agent_timed_out"


def test_a_run_never_picked_up_fails_after_the_queue_age(app, users):
    alice = users.user("alice")
    run = _finished_run(alice)
    old = utcnow() - timedelta(hours=2)
    _force(app, run, status="queued", created_at=old, dispatched_at=old)
    _reaper(app, max_queue_age=3600.0, resend_after=30.0).tick()
    state = alice.get(f"/api/agents/v2/{run}/state").json()
    assert state["status"] == "failed" and "not started within" in state["error"]


def test_a_live_lease_is_left_alone(app, users):
    alice = users.user("alice")
    run = _finished_run(alice)
    _force(app, run, status="running", attempt=1,
           lease_expires_at=utcnow() + timedelta(minutes=5),
           deadline_at=utcnow() + timedelta(hours=1))
    _reaper(app).tick()
    assert alice.get(f"/api/agents/v2/{run}/state").json()["status"] == "running"
    _force(app, run, status="completed")  # leave nothing running behind

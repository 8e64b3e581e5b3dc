"""The supervisor's restart policy with real child processes: a crashing child is restarted
with a doubling backoff while its siblings keep running; the backoff starts over once a
child ran stably; a stop ends everything and restarts nothing."""
from __future__ import annotations

import os
import sys
import time

from runlane.supervisor import Supervisor

CRASH = [sys.executable, "-c", "import sys; sys.exit(3)"]
STEADY = [sys.executable, "-c", "import time; time.sleep(60)"]


def supervise(sup: Supervisor, seconds: float) -> list[tuple[str, float]]:
    """Poll for `seconds`; return (name, time) of every start seen, restarts included."""
    seen = {c.name: c.process.pid for c in sup.children if c.process}
    starts: list[tuple[str, float]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sup.poll()
        for child in sup.children:
            assert child.process is not None
            if seen[child.name] != child.process.pid:
                seen[child.name] = child.process.pid
                starts.append((child.name, child.started_at))
        time.sleep(0.01)
    return starts


def test_a_crashing_child_is_restarted_with_doubling_backoff_while_the_others_keep_running():
    sup = Supervisor(dict(os.environ), grace=5, initial_backoff=0.2, max_backoff=0.8,
                     stable_after=30)
    steady = sup.start("steady", STEADY)
    sup.start("crasher", CRASH)
    first = steady.process.pid
    try:
        starts = [t for name, t in supervise(sup, 4) if name == "crasher"]
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert len(starts) >= 4, starts
        # Each wait doubles (a gap adds the child's own start-up and run), up to the cap.
        assert gaps[0] >= 0.4 and gaps[1] >= 0.8 and gaps[2] >= 0.8, gaps
        assert all(gap < 0.8 + 1.5 for gap in gaps), gaps
        assert sup.children[1].backoff == 0.8
        assert steady.process.pid == first and steady.process.poll() is None
    finally:
        sup.stop()
    assert all(c.process.poll() is not None for c in sup.children)


def test_the_backoff_starts_over_once_a_child_ran_stably():
    sup = Supervisor(dict(os.environ), grace=5, initial_backoff=0.2, max_backoff=5,
                     stable_after=0.3)
    child = sup.start("slow-crasher", [sys.executable, "-c", "import time; time.sleep(0.5)"])
    try:
        supervise(sup, 3)
        assert child.restarts >= 2
        assert child.backoff == 0.4  # reset to 0.2 at each exit, doubled for the next one
    finally:
        sup.stop()


def test_nothing_is_restarted_once_a_stop_was_asked_for():
    sup = Supervisor(dict(os.environ), grace=5, initial_backoff=0.1)
    child = sup.start("crasher", CRASH)
    assert child.process is not None
    child.process.wait()
    sup.poll()  # its restart is due in 0.1 s
    sup.stop_requested = True
    time.sleep(0.2)
    sup.poll()
    sup.stop()
    assert child.restarts == 0

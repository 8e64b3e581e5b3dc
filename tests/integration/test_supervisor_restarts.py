"""The supervisor's restart policy with real child processes: a crashing child is restarted
with a doubling backoff while its siblings keep running; the backoff starts over once a
child ran stably; a stop ends everything and restarts nothing."""
from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable

from runlane.supervisor import Supervisor
from tests.support import wait_until

CRASH = [sys.executable, "-c", "import sys; sys.exit(3)"]
STEADY = [sys.executable, "-c", "import signal; signal.pause()"]  # runs until it is stopped
# Exits on its own after 0.5 s: longer than the `stable_after` it is given below.
STABLE_THEN_EXITS = [sys.executable, "-c", "import time; time.sleep(0.5)"]


def supervise(sup: Supervisor, until: Callable[[list[tuple[str, float]]], bool],
              timeout: float = 20) -> list[tuple[str, float]]:
    """Run the supervisor's loop (polling, as `runlane up` does) until `until(starts)`;
    return (name, time) of every start seen, restarts included."""
    seen = {c.name: c.process.pid for c in sup.children if c.process}
    starts: list[tuple[str, float]] = []

    def step() -> bool:
        sup.poll()
        for child in sup.children:
            assert child.process is not None
            if seen[child.name] != child.process.pid:
                seen[child.name] = child.process.pid
                starts.append((child.name, child.started_at))
        return until(starts)

    wait_until(step, timeout, "the supervisor got that far", interval=0.01)
    return starts


def test_a_crashing_child_is_restarted_with_doubling_backoff_while_the_others_keep_running():
    sup = Supervisor(dict(os.environ), grace=5, initial_backoff=0.2, max_backoff=0.8,
                     stable_after=30)
    steady = sup.start("steady", STEADY)
    sup.start("crasher", CRASH)
    first = steady.process.pid
    try:
        seen = supervise(sup, lambda seen: sum(name == "crasher" for name, _ in seen) >= 4)
        starts = [t for name, t in seen if name == "crasher"]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
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
    child = sup.start("slow-crasher", STABLE_THEN_EXITS)
    try:
        supervise(sup, lambda _: child.restarts >= 2)
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
    time.sleep(0.2)  # kept: the restart falls due meanwhile, and must NOT happen
    sup.poll()
    sup.stop()
    assert child.restarts == 0

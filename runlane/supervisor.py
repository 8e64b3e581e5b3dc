"""Runs Runlane's child processes for `runlane up`: restarts one that crashed (with backoff,
leaving the others alone), stops them all, in order, on a signal, and lets none outlive it.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send `sig` to the child when its parent dies, even
    by SIGKILL (when no handler of ours can run); None where the kernel offers no such thing.

    Linux's parent-death signal fires when the *thread* that forked the child ends, so
    children must be started from a thread that lives as long as the process (the
    supervisor's main thread). The child also checks its parent is still the one that forked
    it: a parent that died between fork and prctl would otherwise never be signalled.
    """
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            os._exit(70)  # in the forked child, before exec
        if os.getppid() != parent:
            os._exit(70)

    return preexec


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None  # set while it waits to be started again


class Supervisor:
    """Starts children in their own process groups so that only we receive Ctrl-C, restarts
    a child that exits on its own after a backoff (`initial_backoff` doubling to
    `max_backoff`, back to the start once it ran `stable_after` seconds), and on a signal
    stops them newest first with SIGTERM, escalating to SIGKILL after `grace` seconds.

    Every child gets the parent-death signal, so a SIGKILLed `runlane up` leaves no web,
    worker or Redis answering on its own; children must therefore be started from the main
    thread (see `die_with_parent`)."""

    def __init__(
        self, env: Mapping[str, str], grace: float = 15.0, *, initial_backoff: float = 1.0,
        max_backoff: float = 30.0, stable_after: float = 60.0,
        on_child_exit: Callable[[Child], None] | None = None,
    ) -> None:
        self.env = dict(env)
        self.grace = grace
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.on_child_exit = on_child_exit
        self.children: list[Child] = []
        self.stop_requested = False

    def start(self, name: str, argv: Sequence[str]) -> Child:
        child = Child(name, argv, backoff=self.initial_backoff)
        self._spawn(child)
        self.children.append(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            list(child.argv), env=self.env, start_new_session=True,
            preexec_fn=die_with_parent())  # noqa: PLW1509 - async-signal-safe: one prctl call
        child.started_at = time.monotonic()
        child.restart_at = None

    def install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            self.stop_requested = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

    def poll(self, now: float | None = None) -> None:
        """Notice children that exited and start those whose backoff has passed."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at and not self.stop_requested:
                    child.restarts += 1
                    log.warning("restarting %s (restart %d)", child.name, child.restarts)
                    self._spawn(child)
                continue
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                continue
            if now - child.started_at >= self.stable_after:
                child.backoff = self.initial_backoff  # it had been running well: start over
            delay = child.backoff
            child.backoff = min(self.max_backoff, child.backoff * 2)
            child.restart_at = now + delay
            log.error("%s exited with status %s after %.1fs; restarting it in %.0fs",
                      child.name, code, now - child.started_at, delay)
            if self.on_child_exit is not None:
                self.on_child_exit(child)

    def wait(self, on_tick: Callable[[], None] | None = None, tick: float = 0.2) -> int:
        """Supervise until a signal arrives; return the exit status to use."""
        while not self.stop_requested:
            self.poll()
            if on_tick is not None:
                on_tick()
            time.sleep(tick)
        return 0

    def stop(self) -> None:
        for child in self.children:
            child.restart_at = None
        for child in reversed(self.children):
            proc = child.process
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in reversed(self.children):
            proc = child.process
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", child.name, self.grace)
                proc.kill()
                proc.wait()

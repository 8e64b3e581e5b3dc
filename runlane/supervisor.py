"""Runs Runlane's child processes for `runlane up` and stops them all, in order, on a signal."""
from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class Supervisor:
    """Starts children in their own process groups so that only we receive Ctrl-C, then
    stops them newest first with SIGTERM, escalating to SIGKILL after `grace` seconds."""

    def __init__(self, env: Mapping[str, str], grace: float = 15.0) -> None:
        self.env = dict(env)
        self.grace = grace
        self.children: list[Child] = []
        self.stop_requested = False

    def start(self, name: str, argv: Sequence[str]) -> Child:
        child = Child(name, argv)
        child.process = subprocess.Popen(list(argv), env=self.env, start_new_session=True)
        self.children.append(child)
        return child

    def install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            self.stop_requested = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

    def wait(self) -> int:
        """Block until a signal arrives or a child exits; return the exit status to use."""
        while not self.stop_requested:
            for child in self.children:
                assert child.process is not None
                code = child.process.poll()
                if code is not None:
                    log.error("%s exited with status %s; stopping the others", child.name, code)
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
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

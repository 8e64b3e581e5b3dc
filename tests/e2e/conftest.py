"""`runlane up` as a user runs it: a subprocess in an empty folder, nothing configured."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.processes import free_port, runlane_script
from tests.support import postgres_database, wait_until


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def clean_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RUNLANE_") and k not in ("REDIS_URL", "DATABASE_URL")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


@dataclass
class Deployment:
    base_url: str
    workdir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def token(self, user: str) -> str:
        out = subprocess.run(
            [runlane_script(), "token", "--user", user],
            cwd=self.workdir, env=self.env, capture_output=True, text=True, check=True, timeout=30,
        )
        return out.stdout.strip()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 40) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    with ExitStack() as stack:
        env = clean_env(tmp_path)
        if request.param == "postgresql":
            url = stack.enter_context(postgres_database("runlane_e2e"))
            if url is None:
                pytest.skip("no PostgreSQL reachable")
            env["DATABASE_URL"] = url
        yield from _deployment(tmp_path, env)


def _deployment(tmp_path: Path, env: dict[str, str]) -> Iterator[Deployment]:
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [runlane_script(), "up", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    dep = Deployment(f"http://127.0.0.1:{port}", tmp_path, env, process, log)

    def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"runlane up exited early:\n{log.read_text()}")
        return "Runlane is up at" in log.read_text()

    try:
        wait_until(up, 90, "runlane up is up", interval=0.2)
    except AssertionError:
        process.kill()
        pytest.fail(f"runlane up did not come up:\n{log.read_text()}")
    try:
        requests.get(f"{dep.base_url}/readyz", timeout=10).raise_for_status()
        yield dep
    finally:
        # A test that did not stop it gets the graceful path (SIGTERM), so nothing `up` started
        # outlives the test; a SIGKILL here would orphan the web, the worker and Redis.
        children = descendants(process.pid)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

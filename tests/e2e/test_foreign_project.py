"""Runlane next to another Celery project: neither takes the other's modules or settings.

The other project is a folder with its own `tasks.py` and `celeryconfig.py` (the names Celery
projects use, and the names of Runlane's own top-level modules). `runlane up` started there
must run Runlane's worker and web, and Celery commands of other projects must work in an
environment where Runlane is installed and REDIS_URL is unset.
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from runlane.embedded import EmbeddedRedis
from tests.e2e.conftest import clean_env
from tests.processes import free_port, runlane_script
from tests.support import User, wait_until

FOREIGN_TASKS = '''
from pathlib import Path
Path(__file__).with_name("foreign-tasks-imported").touch()
from celery import Celery
app = Celery("foreign")
'''
FOREIGN_CONFIG = '''
from pathlib import Path
Path(__file__).with_name("foreign-config-imported").touch()
broker_url = "memory://"
task_default_queue = "foreign"
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "tasks.py").write_text(FOREIGN_TASKS)
    (folder / "celeryconfig.py").write_text(FOREIGN_CONFIG)
    return folder


@pytest.fixture
def bare_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


@pytest.fixture
def other_redis(tmp_path: Path) -> Iterator[str]:
    with EmbeddedRedis(tmp_path / "other-redis") as server:
        yield server.url


def _celery(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(cwd)
    return subprocess.run([sys.executable, "-m", "celery", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_another_projects_celery_inspect_ping_works_with_runlane_installed_and_no_redis_url(
    bare_folder: Path, other_redis: str,
) -> None:
    done = _celery(f"--broker={other_redis}", "inspect", "ping", "--timeout", "1",
                   cwd=bare_folder)
    output = done.stdout + done.stderr
    assert "REDIS_URL" not in output and "Traceback" not in output, output
    assert "No nodes replied" in output  # it reached the broker; no worker of its own runs


def test_another_projects_default_app_gets_none_of_runlanes_settings(bare_folder: Path,
                                                                      other_redis: str):
    done = _celery("-b", other_redis, "report", cwd=bare_folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tasks.broker" not in done.stdout  # Runlane's transport
    assert "'runlane'" not in done.stdout  # Runlane's queue
    assert "transport:redis" in done.stdout


def test_runlane_up_in_a_folder_with_its_own_tasks_and_celeryconfig_runs_runlanes_worker(
    project: Path,
) -> None:
    env = clean_env(project)
    port = free_port()
    log = project.parent / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen([runlane_script(), "up", "--port", str(port)], cwd=project,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            assert process.poll() is None, log.read_text()
            return "Runlane is up at" in log.read_text()

        wait_until(up, 90, "runlane up is up", interval=0.2)
        token = subprocess.run([runlane_script(), "token", "--user", "alice"], cwd=project,
                               env=env, capture_output=True, text=True, timeout=30, check=True)
        alice = User("alice", token.stdout.strip(), f"http://127.0.0.1:{port}")
        run = alice.submit("t1", "demo", {"steps": 2, "delay_ms": 10})
        state = alice.wait_for_state(run["run_id"], {"completed", "failed"}, timeout=60)
        assert state["status"] == "completed", (state, log.read_text())

        text = log.read_text()
        assert not (project / "foreign-tasks-imported").exists(), text
        assert not (project / "foreign-config-imported").exists(), text
        assert "No module named 'tasks." not in text
        # The worker's banner names the broker Runlane uses, not the transport's class path.
        assert "tasks.broker:Transport://" not in text
        assert re.search(r"transport: +redis://(:\*\*@)?127\.0\.0\.1:\d+/0", text), text
        assert "setup plugin" not in text  # Alembic's plugin registry stays quiet
        assert requests.get(f"{alice.base_url}/readyz", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(60)

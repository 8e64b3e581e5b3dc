"""Nothing serves on a database without Runlane's schema: `runlane web` and the worker refuse
to start with a message naming `runlane migrate` (or migrate when RUNLANE_AUTO_MIGRATE says
so), and /readyz answers 503 while the schema is behind or the database cannot write.

The read-only case is a real one: the SQLite file lives on a tmpfs this test mounts and then
remounts read-only under the running server (root ignores file modes, not a read-only mount).
"""
from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from alembic import command
from alembic.config import Config

from storage.db import MIGRATIONS, make_engine, migrate
from storage.schema import SchemaNotCurrent, require_current_schema, schema_status
from tests.processes import free_port, runlane_script, until_serving
from tests.support import postgres_database, readyz_until


def _env(redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RUNLANE_AUTO_MIGRATE"}
    env.update(REDIS_URL=redis_url, DATABASE_URL=database_url, **extra)
    return env


def _alembic(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = make_engine(url)
    return config


def test_schema_status_tells_an_empty_a_behind_and_a_current_database_apart(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = make_engine(url)
    try:
        assert schema_status(engine).current == ()
        with pytest.raises(SchemaNotCurrent, match="runlane migrate"):
            require_current_schema(url)
        migrate(url)
        status = schema_status(engine)
        assert status.at_head and status.current == status.head
        command.downgrade(_alembic(url), "0003")
        status = schema_status(engine)
        assert not status.at_head and status.current == ("0003",)
        with pytest.raises(SchemaNotCurrent, match="0003"):
            require_current_schema(url)
    finally:
        engine.dispose()


def test_runlane_web_refuses_an_unmigrated_database_and_names_runlane_migrate(
    redis_url: str, tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'empty.db'}"
    done = subprocess.run([runlane_script(), "web", "--port", str(free_port())],
                          env=_env(redis_url, database_url), capture_output=True, text=True,
                          timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "runlane migrate" in output and "RUNLANE_AUTO_MIGRATE" in output
    assert "Traceback" not in output
    assert output.count("runlane migrate") <= 2  # said once, not once per respawned worker


def test_runlane_web_migrates_first_when_auto_migrate_is_on(redis_url: str, tmp_path: Path):
    database_url = f"sqlite:///{tmp_path / 'auto.db'}"
    port = free_port()
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [runlane_script(), "web", "--port", str(port)],
            env=_env(redis_url, database_url, RUNLANE_AUTO_MIGRATE="true"),
            stdout=out, stderr=subprocess.STDOUT)
    try:
        ready = until_serving(process, f"http://127.0.0.1:{port}/readyz", log, status=None)
        assert ready.status_code == 200, ready.text
        require_current_schema(database_url)
    finally:
        process.terminate()
        process.wait(30)


def test_a_worker_refuses_an_unmigrated_database_and_names_runlane_migrate(
    redis_url: str, tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'empty.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "solo",
         "--without-mingle", "--without-gossip", "-n", f"guard-{os.getpid()}@%h"],
        env=_env(redis_url, database_url), capture_output=True, text=True, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "runlane migrate" in output
    assert "Traceback" not in output and "no such table" not in output


def test_readyz_answers_503_with_schema_while_the_database_is_behind_head(
    server_with, tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    migrate(url)
    base = server_with(database_url=url)
    assert requests.get(f"{base}/readyz", timeout=10).status_code == 200

    command.downgrade(_alembic(url), "0003")
    behind = readyz_until(base, 503)
    assert behind.status_code == 503
    assert behind.json()["failing"] == ["schema"]
    assert "runlane migrate" in behind.json()["detail"]

    migrate(url)
    assert readyz_until(base, 200).status_code == 200


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A small ext4 file system on a loop device, which the test may shut down (needs root
    with CAP_SYS_ADMIN and a free loop device; skipped otherwise)."""
    image = tmp_path / "disk.img"
    with image.open("wb") as fh:
        fh.truncate(16 * 1024 * 1024)
    mount = tmp_path / "disk"
    mount.mkdir()
    attach = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True,
                            text=True)
    if attach.returncode != 0:
        pytest.skip(f"no loop device here: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    try:
        subprocess.run(["mkfs.ext4", "-q", device], check=True, capture_output=True)
        made = subprocess.run(["mount", device, str(mount)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount here: {made.stderr.strip()}")
        try:
            yield mount
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def shut_down(mount: Path) -> None:
    """What ext4 does to itself when its disk fails: from now on every write is an I/O
    error, while reads of cached pages (SELECT 1, the schema's version) still succeed."""
    ext4_ioc_shutdown, nologflush = 0x8004587D, 2
    fd = os.open(mount, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, ext4_ioc_shutdown, struct.pack("I", nologflush))
    finally:
        os.close(fd)


def test_readyz_answers_503_with_database_while_the_disk_under_sqlite_fails(
    server_with, disk: Path,
) -> None:
    url = f"sqlite:///{disk / 'runlane.db'}"
    migrate(url)
    base = server_with(database_url=url)
    assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            shut_down(disk)
            # What /readyz used to check still succeeds on an open connection.
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        down = readyz_until(base, 503)
        assert down.status_code == 503, down.text
        assert down.json()["failing"] == ["database"]
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    finally:
        engine.dispose()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the test server (skipped when there is none)."""
    with postgres_database("runlane_guard") as url:
        if url is None:
            pytest.skip("no PostgreSQL reachable")
        yield url


def test_readyz_answers_503_with_database_while_postgresql_is_read_only(server_with,
                                                                        pg_database: str):
    migrate(pg_database)
    base = server_with(database_url=pg_database)
    assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
    engine = make_engine(pg_database)
    try:
        with engine.connect() as connection:  # what a failover to a standby looks like to SQL
            connection.exec_driver_sql(f'ALTER DATABASE "{engine.url.database}" '
                                       "SET default_transaction_read_only = on")
            connection.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE datname = current_database() "
                                       "AND pid <> pg_backend_pid()")
            connection.commit()
    finally:
        engine.dispose()
    down = readyz_until(base, 503)
    assert down.status_code == 503, down.text
    assert down.json()["failing"] == ["database"]


_RACER = """
import sys
from storage.schema import require_current_schema
print("ready", flush=True)
sys.stdin.readline()  # every racer starts migrating at the same moment
require_current_schema(sys.argv[1], auto_migrate=True)
print("done", flush=True)
"""


def _race_auto_migrate(url: str, racers: int = 4) -> None:
    """`racers` processes, each a web or worker starting with RUNLANE_AUTO_MIGRATE on the same
    fresh database, released together once all have imported Runlane."""
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(racers)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0 and out.strip() == "done", err[-3000:]
    engine = make_engine(url)
    try:
        status = schema_status(engine)
        assert status.at_head and status.current == status.head
    finally:
        engine.dispose()


def test_auto_migrate_racing_on_a_fresh_sqlite_file_all_start_at_head(tmp_path: Path):
    _race_auto_migrate(f"sqlite:///{tmp_path / 'fresh' / 'runlane.db'}")


def test_auto_migrate_racing_on_a_fresh_postgresql_database_all_start_at_head(pg_database: str):
    _race_auto_migrate(pg_database)

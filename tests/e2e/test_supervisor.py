"""`runlane up`'s supervisor with real processes: a crashed child is restarted and the others
keep serving, a SIGKILLed `up` leaves nothing running, a busy port is refused at once, and
web processes do not share gunicorn's control socket."""
from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.e2e.conftest import alive, clean_env, descendants
from tests.processes import free_port, runlane_script, stop
from tests.support import User, wait_until

# Celery's consumer, after its second failed reconnect: "Trying again in 4.00 seconds... (2/100)"
RECONNECT_FAILED_TWICE = re.compile(r"Trying again .*\(2/\d+\)")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def direct_children(pid: int) -> list[int]:
    out = []
    for child in descendants(pid):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(child)
    return out


class Up:
    def __init__(self, workdir: Path, port: int, env: dict[str, str]) -> None:
        self.workdir, self.port, self.env = workdir, port, env
        self.log = workdir / f"up-{port}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([runlane_script(), "up", "--port", str(port)],
                                            cwd=workdir, env=env, stdout=out,
                                            stderr=subprocess.STDOUT)
        self.base_url = f"http://127.0.0.1:{port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self) -> None:
        def up() -> bool:
            assert self.process.poll() is None, self.text()
            return "Runlane is up at" in self.text()
        wait_until(up, 90, "runlane up is up")

    def token(self, user: str) -> str:
        return subprocess.run([runlane_script(), "token", "--user", user], cwd=self.workdir,
                              env=self.env, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    def child(self, word: str) -> int:
        return next(p for p in direct_children(self.process.pid) if word in cmdline(p))


@contextmanager
def runlane_up(workdir: Path, port: int | None = None, redis_url: str | None = None
               ) -> Iterator[Up]:
    env = clean_env(workdir)
    env["HOME"] = str(workdir)
    env.pop("XDG_RUNTIME_DIR", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    up = Up(workdir, port or free_port(), env)
    try:
        yield up
    finally:
        everything = descendants(up.process.pid)
        stop(up.process, timeout=40)
        for pid in everything:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_crashed_worker_is_restarted_and_its_run_finishes_while_the_web_keeps_serving(tmp_path):
    with runlane_up(tmp_path) as up:
        up.wait_up()
        alice = User("alice", up.token("alice"), up.base_url)
        run = alice.submit("t", "demo", {"steps": 6, "delay_ms": 400})["run_id"]
        wait_until(lambda: alice.get(f"/api/agents/v2/{run}/state").json()["status"] == "running",
                   30, "the run started")
        worker = up.child("celery")
        os.killpg(worker, signal.SIGKILL)  # the worker and its pool, no cleanup
        # The web was not stopped with it, and answers all along.
        assert requests.get(f"{up.base_url}/healthz", timeout=5).status_code == 200
        wait_until(lambda: "restarting worker-0" in up.text(), 15, "the worker is restarted")
        assert up.process.poll() is None
        assert up.child("celery") != worker
        # The new worker's reaper finds the lost run and it finishes as attempt 2.
        state = alice.wait_for_state(run, {"completed", "failed"}, timeout=60)
        assert state["status"] == "completed" and state["attempt"] == 2, state
        after = alice.submit("t2", "echo", "served")["run_id"]
        assert alice.wait_for_state(after, {"completed"}, timeout=30)["output"] == "served"


def test_runlane_up_keeps_serving_after_its_redis_restarts_mid_run(tmp_path):
    from runlane.embedded import EmbeddedRedis

    redis_server = EmbeddedRedis(tmp_path / "redis", port=free_port())
    redis_server.start()
    try:
        with runlane_up(_mk(tmp_path / "up"), redis_url=redis_server.url) as up:
            up.wait_up()
            alice = User("alice", up.token("alice"), up.base_url)
            run = alice.submit("t", "demo", {"steps": 10, "delay_ms": 700})["run_id"]
            wait_until(lambda: alice.get(f"/api/agents/v2/{run}/state").json()["last_seq"] >= 2,
                       30, "the run is under way")
            assert redis_server.process is not None
            redis_server.process.kill()
            redis_server.process.wait()
            # The outage of the report (5 s): long enough that the worker's reconnects fail
            # twice (Celery retries after 0, 2, 4, ... s), which is what must not end it.
            wait_until(lambda: RECONNECT_FAILED_TWICE.search(up.text()), 30,
                       "the worker failed to reconnect twice")
            redis_server.start()
            back = time.monotonic()
            assert alice.wait_for_state(run, {"completed", "failed", "timed_out"},
                                        timeout=60)["status"] == "completed"
            after = alice.submit("t2", "echo", "served")["run_id"]
            assert alice.wait_for_state(after, {"completed"}, timeout=30)["output"] == "served"
            print(f"served again {time.monotonic() - back:.2f}s after Redis came back")
            assert up.process.poll() is None
            assert "Unrecoverable error" not in up.text()
    finally:
        redis_server.stop()


def test_sigkilled_runlane_up_leaves_no_process_and_the_port_can_be_used_again(tmp_path):
    port = free_port()
    with runlane_up(_mk(tmp_path / "first"), port) as up:
        up.wait_up()
        children = descendants(up.process.pid)
        assert len(children) >= 3
        up.process.kill()
        up.process.wait()
        try:
            wait_until(lambda: not [p for p in children if alive(p)], 30,
                       "every child of the killed `runlane up` exits")
        finally:  # orphans are no longer below `up`: the fixture's clean-up cannot see them
            for pid in children:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    with runlane_up(_mk(tmp_path / "second"), port) as again:
        again.wait_up()
        assert requests.get(f"{again.base_url}/readyz", timeout=10).status_code == 200


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


class _Answering(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the stdlib's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"someone else")

    def log_message(self, *_: object) -> None:
        pass


def test_runlane_up_on_a_port_in_use_fails_at_once_naming_the_port(tmp_path):
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    port = other.server_address[1]
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        env = clean_env(tmp_path)
        env["HOME"] = str(tmp_path)
        started = time.monotonic()
        done = subprocess.run([runlane_script(), "up", "--port", str(port)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
        assert done.returncode == 1
        assert "Runlane is up" not in done.stdout
        assert str(port) in done.stderr and "in use" in done.stderr
        assert took < 4, f"took {took:.1f}s"
    finally:
        other.shutdown()


def web_env(tmp_path: Path) -> dict[str, str]:
    """`runlane web` alone, its database migrated; its Redis is never reached (/healthz)."""
    env = clean_env(tmp_path)
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(HOME=str(tmp_path), RUNLANE_INSTANCE_PATH=str(tmp_path / "inst"),
               RUNLANE_SECRET_KEY="s" * 48, DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
               REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    subprocess.run([runlane_script(), "migrate"], env=env, check=True, timeout=60,
                   capture_output=True)
    return env


def test_each_web_process_keeps_its_own_control_socket_when_another_stops(tmp_path):
    env = web_env(tmp_path)
    webs, ports = [], [free_port(), free_port()]
    try:
        for port in ports:
            log = (tmp_path / f"web-{port}.log").open("wb")
            webs.append(subprocess.Popen([runlane_script(), "web", "--port", str(port)],
                                         env=env, stdout=log, stderr=subprocess.STDOUT))

        def listening() -> list[Path]:
            found = [p for p in tmp_path.rglob("*.ctl") if p.is_socket()]
            return found if len(found) == 2 else []
        sockets = wait_until(listening, 60, "both web processes bound a control socket")
        assert not (tmp_path / ".gunicorn").exists()
        stop(webs[0])
        survivor = next(p for p in sockets if str(ports[1]) in p.name)
        assert survivor.is_socket()
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(survivor))  # still served by the running web process
    finally:
        for web in webs:
            stop(web)


def test_the_metrics_folder_stays_bounded_as_web_workers_are_replaced(tmp_path):
    kills = 3
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = web_env(tmp_path)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    port = free_port()
    log = (tmp_path / "web.log").open("wb")
    web = subprocess.Popen([runlane_script(), "web", "--port", str(port)], env=env,
                           stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def serving() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_until(serving, 60, "the web serves")
        sizes = []
        for _ in range(kills):
            # A v1 call is counted in this worker's own sample file (401: no token).
            assert requests.get(f"{base}/api/agents/r1/status", timeout=5).status_code == 401
            worker = wait_until(lambda: direct_children(web.pid), 30, "a gunicorn worker")[0]
            os.kill(worker, signal.SIGKILL)
            wait_until(lambda killed=worker: direct_children(web.pid)
                       and killed not in direct_children(web.pid) and serving(),
                       60, "a new gunicorn worker serves")
            sizes.append(len(list(metrics_dir.glob("*.db"))))
        assert sizes[-1] <= sizes[0], sizes  # the dead workers' files are folded, not kept
        scrape = requests.get(f"{base}/metrics", timeout=5).text
        assert f'runlane_v1_calls_total{{route="/api/agents/<run_id>/status"}} {kills}.0' in scrape
    finally:
        stop(web)

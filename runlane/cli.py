"""The `runlane` command: run the whole system (`up`) or one part of it, issue tokens, and
talk to a running server (`submit`, `runs`, `state`, `events`, `cancel`, `agents`)."""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from runlane.settings import load
from runlane.supervisor import Child, Supervisor, die_with_parent

# Runlane's top-level modules, imported before Celery runs: with `-P` the current folder is not
# on sys.path yet, so a project's own `tasks.py` or `celeryconfig.py` there cannot stand in
# for them (Celery puts that folder first on sys.path for `-A` and its includes). The web is
# not started this way: gevent must patch before Runlane's modules are imported, so gunicorn
# drops the folder from sys.path itself (runlane/gunicorn_conf.py `on_starting`).
_WORKER_MODULES = "agents, celeryconfig, events, factories, runlane, storage, tasks"


def _python(modules: str, entry: str, prog: str) -> list[str]:
    module, func = entry.split(":")
    code = (f"import sys, {modules}; from {module} import {func}; "
            f"sys.argv[0] = {prog!r}; sys.exit({func}())")
    return [sys.executable, "-P", "-c", code]


def _web_argv(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-P", "-m", "gunicorn", "-c", "python:runlane.gunicorn_conf",
        "-b", f"{host}:{port}", "webapp.wsgi:app",
    ]


def _worker_argv(
    concurrency: int, queues: list[str], *, name: str = "runlane",
    beat_schedule: Path | None = None,
) -> list[str]:
    # prefork: the only Celery pool that can enforce a hard time limit on a stuck run.
    argv = [
        *_python(_WORKER_MODULES, "celery.__main__:main", "celery"),
        "-A", "tasks", "worker", "-P", "prefork",
        "-c", str(concurrency), "-Q", ",".join(queues), "--loglevel", "INFO",
        "-n", f"{name}@%h",
    ]
    if beat_schedule is not None:  # one process runs the periodic jobs (event-log purge)
        argv += ["-B", "--schedule", str(beat_schedule)]
    return argv


def _port_in_use(host: str, port: int) -> bool:
    """Whether something listens on the port already: then whatever answers there later is
    not our web server, so `up` refuses at once instead of taking its answers for ours."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _wait_for_web(host: str, port: int, web: Child, timeout: float) -> bool:
    """Wait until our web process answers on the port; False as soon as it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if web.process is None or web.process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _fresh_dir(path: Path) -> str:
    """An empty folder: samples of a previous `runlane up` must not be counted again."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def cmd_up(args: argparse.Namespace) -> int:
    from runlane import metrics  # noqa: PLC0415
    from runlane.embedded import EmbeddedRedis  # noqa: PLC0415 - only `up` embeds Redis
    from storage.db import migrate  # noqa: PLC0415

    if _port_in_use(args.host, args.port):
        print(f"runlane: port {args.port} on {args.host} is already in use (another "
              "`runlane up`, or another server); stop it or pass --port", file=sys.stderr)
        return 1
    settings = load()
    instance = settings.instance_path.resolve()
    instance.mkdir(parents=True, exist_ok=True)
    settings.jwt_secret()  # creates the development secret before any child reads it
    env = dict(os.environ, RUNLANE_INSTANCE_PATH=str(instance))
    metrics_dir = _fresh_dir(instance / "metrics")  # web /metrics sees every child's samples
    env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(instance / "redis", preexec_fn=die_with_parent())
        env["REDIS_URL"] = embedded.start()
        print(f"Embedded Redis at {env['REDIS_URL']}", flush=True)
    database_url = settings.resolved_database_url()
    env["DATABASE_URL"] = database_url
    def compact_metrics(*_: object) -> None:
        try:
            metrics.compact(metrics_dir)
        except OSError:
            pass  # a folder hiccup: the next exit or beat folds the files in

    supervisor = Supervisor(env, on_child_exit=compact_metrics)
    supervisor.install_signal_handlers()
    status = 0
    try:
        migrate(database_url)
        for n in range(args.workers):  # the first worker also runs beat (periodic jobs)
            schedule = instance / "celerybeat-schedule" if n == 0 else None
            supervisor.start(f"worker-{n}", _worker_argv(
                args.concurrency, settings.queues(), name=f"runlane{n}", beat_schedule=schedule))
        web = supervisor.start("web", _web_argv(args.host, args.port))
        if not _wait_for_web(args.host, args.port, web, 60):
            print(f"runlane: the web server did not start on port {args.port}; see the log "
                  "above", file=sys.stderr)
            return 1
        url = f"http://{args.host}:{args.port}"
        print(
            f"\nRunlane is up at {url}\n"
            f"  token:  runlane token --user alice      (instance folder {instance})\n"
            f"  submit: curl -X POST {url}/api/agents/v2/thread/t1/runs "
            "-H \"Authorization: Bearer $TOKEN\" "
            "-d '{\"agent\":\"demo\",\"input\":{\"steps\":3}}'\n"
            "  stop:   Ctrl-C\n",
            flush=True,
        )
        # Pool children and web workers die unseen by the supervisor: fold their files in
        # on a slow beat too.
        status = supervisor.wait(on_tick=_every(60.0, compact_metrics))
    finally:
        supervisor.stop()
        if embedded is not None:
            embedded.stop()
    return status


def _every(seconds: float, job: Callable[[], object]) -> Callable[[], None]:
    """A tick that runs `job` at most once per `seconds`."""
    due = [time.monotonic() + seconds]

    def tick() -> None:
        if time.monotonic() >= due[0]:
            due[0] = time.monotonic() + seconds
            job()

    return tick


def _shared_metrics_dir(role: str) -> None:
    """Several processes (gunicorn workers, prefork children) must pool their samples for
    one scrape to see them all; an operator's PROMETHEUS_MULTIPROC_DIR is kept."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"runlane-{role}-")


def cmd_web(args: argparse.Namespace) -> int:
    load().require_redis_url()
    if int(os.environ.get("RUNLANE_WEB_WORKERS", "1")) > 1:
        _shared_metrics_dir("web")
    os.execv(sys.executable, _web_argv(args.host, args.port))


def cmd_worker(args: argparse.Namespace) -> int:
    settings = load()
    settings.require_redis_url()
    queues = args.queues.split(",") if args.queues else settings.queues()
    if settings.worker_metrics_port:  # the exporter must see the prefork children too
        _shared_metrics_dir("worker")
    os.execv(sys.executable, _worker_argv(args.concurrency, queues))


def cmd_token(args: argparse.Namespace) -> int:
    # The token side only (runlane/tokens.py): no Flask, database or Celery client is loaded.
    from runlane.secrets import signing_secret_source  # noqa: PLC0415
    from runlane.tokens import TokenVerifier  # noqa: PLC0415

    settings = load()
    source = signing_secret_source(settings, init=args.init)
    roles = ("admin",) if args.admin else ()
    print(TokenVerifier(settings).issue(args.user, args.ttl, roles=roles))
    print(f"runlane: signed with {source}", file=sys.stderr)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from storage.db import migrate  # noqa: PLC0415

    migrate(load().resolved_database_url())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runlane", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run web, worker and (if REDIS_URL is unset) Redis")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    up.add_argument("--concurrency", type=int, default=2, help="pool children per worker")
    up.set_defaults(func=cmd_up)

    web = sub.add_parser("web", help="run the web server alone (needs REDIS_URL)")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    web.set_defaults(func=cmd_web)

    worker = sub.add_parser("worker", help="run a Celery worker alone (needs REDIS_URL)")
    worker.add_argument("--concurrency", type=int, default=2)
    worker.add_argument("-Q", "--queues", default="", help="comma-separated (default: all "
                        "queues of RUNLANE_AGENT_QUEUES plus RUNLANE_DEFAULT_QUEUE)")
    worker.set_defaults(func=cmd_worker)

    token = sub.add_parser("token", help="print a signed token for a user (development)")
    token.add_argument("--user", required=True)
    token.add_argument("--ttl", type=int, default=None, help="seconds (default 24 h)")
    token.add_argument("--admin", action="store_true",
                       help="add the admin role (honoured only with RUNLANE_ADMIN_ENABLED=true)")
    token.add_argument("--init", action="store_true",
                       help="create the instance's development secret if it has none")
    token.set_defaults(func=cmd_token)

    mig = sub.add_parser("migrate", help="apply database migrations")
    mig.set_defaults(func=cmd_migrate)

    from runlane.cli_client import add_commands  # noqa: PLC0415 - no server code imported

    add_commands(sub)  # submit, runs, state, events, cancel, agents: talk to a server
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from runlane import logs  # noqa: PLC0415

    logs.configure(load())
    args = build_parser().parse_args(argv)
    from domain.errors import RunlaneError  # noqa: PLC0415

    try:
        return int(args.func(args))
    except RunlaneError as exc:
        print(f"runlane: {exc.detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

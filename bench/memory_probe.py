"""Where the memory of an idle socket goes: tracemalloc and gc object counts measured inside
the gunicorn worker, before and after opening N sockets, for Runlane and for the bare
flask-sock echo app (docs/benchmarks.md, "What the memory went to").

    python bench/memory_probe.py [--sockets 2000] [--frames 25]

This file is also the gunicorn config of the probed worker (`-c bench/memory_probe.py`): it
loads Runlane's own gunicorn settings (for Runlane only) and adds a `post_worker_init` hook
that starts tracemalloc and takes a snapshot whenever the driver creates a trigger file.
The worker timeout is raised because comparing snapshots blocks the worker for a while.
Not a figure to quote for RSS (tracemalloc inflates it); `sockets_memory.py` is.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

if os.environ.get("PROBE_DIR") and "gunicorn" in sys.modules:  # loaded as gunicorn config
    if os.environ.get("PROBE_RUNLANE_CONF"):
        exec(Path(os.environ["PROBE_RUNLANE_CONF"]).read_text())  # noqa: S102 - our own config
    timeout = 3600

    def post_worker_init(worker: Any) -> None:
        import collections
        import gc
        import json
        import tracemalloc

        import gevent

        frames = int(os.environ.get("PROBE_FRAMES", "25"))
        tracemalloc.start(frames)
        out = Path(os.environ["PROBE_DIR"])
        snaps: dict[str, Any] = {}

        def take(name: str) -> None:
            gc.collect()
            counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
            snaps[name] = (tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]), counts)
            if name == "after":
                (before, c0), (after, c1) = snaps["before"], snaps["after"]
                c1.subtract(c0)
                stats = after.compare_to(before, "lineno")
                (out / "probe.json").write_text(json.dumps({
                    "objects": dict(c1.most_common(60)),
                    "lines": [[str(s.traceback[0]), s.size_diff, s.count_diff] for s in stats],
                }))

        def watch() -> None:
            while True:
                for name in ("before", "after"):
                    trigger = out / f"take_{name}"
                    if trigger.exists():
                        trigger.unlink()
                        take(name)
                        (out / f"done_{name}").touch()
                gevent.sleep(0.2)

        gevent.spawn(watch)


def _probe(app: str, sockets: int, frames: int, workdir: Path) -> dict[str, Any]:
    """Start one probed worker, hold `sockets` idle sockets, return the per-socket deltas."""
    import json
    import subprocess
    import time

    import sockets_memory as sm
    from common import ROOT, SECRET, children, free_port, rss_kb, wait_http

    out = workdir / app
    out.mkdir(parents=True)
    port = free_port()
    env = {**os.environ, "PROBE_DIR": str(out), "PROBE_FRAMES": str(frames)}
    argv = [sys.executable, "-m", "gunicorn", "-c", __file__, "-b", f"127.0.0.1:{port}"]
    redis = None
    if app == "runlane":
        from runlane.embedded import EmbeddedRedis
        from storage.db import migrate

        redis = EmbeddedRedis(workdir / "redis")
        redis.start()
        database_url = f"sqlite:///{workdir / 'probe.db'}"
        migrate(database_url)
        env.update({"REDIS_URL": redis.url, "DATABASE_URL": database_url,
                    "RUNLANE_SECRET_KEY": SECRET, "RUNLANE_INSTANCE_PATH": str(workdir),
                    "RUNLANE_SOCKET_PING_INTERVAL": "600",
                    "RUNLANE_SOCKET_CONNECTS_PER_MINUTE": "1000000",
                    "RUNLANE_WEB_CONNECTIONS": "20000",
                    "PROBE_RUNLANE_CONF": str(ROOT / "runlane" / "gunicorn_conf.py")})
        os.environ.update({k: env[k] for k in ("RUNLANE_SECRET_KEY", "REDIS_URL", "DATABASE_URL")})
        argv += ["--chdir", str(ROOT), "webapp.wsgi:app"]
        path = "/api/agents/v2/ws"
    else:  # the bare app: the same command line as sockets_memory.py gives it
        argv += ["-k", "gevent", "-w", "1", "--worker-connections", "20000",
                 "--chdir", str(ROOT / "bench"), "bare_app:app"]
        path = "/ws"
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def snapshot(name: str) -> None:
        (out / f"take_{name}").touch()
        while not (out / f"done_{name}").exists():
            time.sleep(0.2)

    try:
        wait_http(port)
        pid = children(server.pid)[0]
        runlane = app == "runlane"
        warm = sm.hold(port, path, 20, 1, runlane, start=10**6)
        time.sleep(1)
        snapshot("before")
        rss0 = rss_kb(pid)
        held = sm.hold(port, path, sockets, 2, runlane)
        time.sleep(2)
        snapshot("after")
        rss1 = rss_kb(pid)
        sm.release(held + warm)
    finally:
        server.terminate()
        server.wait(30)
        if redis is not None:
            redis.stop()
    data = json.loads((out / "probe.json").read_text())
    return {"rss_kb": (rss1 - rss0) / sockets,
            "traced_bytes": sum(size for _, size, _ in data["lines"]) / sockets,
            "lines": {line: size / sockets for line, size, _ in data["lines"]},
            "objects": {k: v / sockets for k, v in data["objects"].items()}}


def main() -> int:
    import argparse
    import tempfile

    from common import raise_fd_limit

    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="runlane-probe-"))
    runlane = _probe("runlane", args.sockets, args.frames, workdir)
    bare = _probe("bare", args.sockets, args.frames, workdir)
    print("per socket          Runlane      bare   (tracemalloc on: RSS is inflated)")
    print(f"RSS KB           {runlane['rss_kb']:10.2f}{bare['rss_kb']:10.2f}")
    print(f"traced bytes     {runlane['traced_bytes']:10.0f}{bare['traced_bytes']:10.0f}")
    print("\nbytes per socket by line (Runlane - bare, Runlane, bare):")
    lines = set(runlane["lines"]) | set(bare["lines"])
    site = str(Path(sys.executable).resolve().parents[1])
    for line in sorted(lines, key=lambda k: -abs(runlane["lines"].get(k, 0)
                                                  - bare["lines"].get(k, 0)))[:args.top]:
        r, b = runlane["lines"].get(line, 0.0), bare["lines"].get(line, 0.0)
        print(f"{r - b:9.0f}{r:9.0f}{b:9.0f}  {line.replace(site, '~')}")
    print("\nobjects per socket by type (Runlane, bare), where they differ:")
    for name in sorted(set(runlane["objects"]) | set(bare["objects"])):
        r, b = runlane["objects"].get(name, 0.0), bare["objects"].get(name, 0.0)
        if abs(r - b) >= 0.5:
            print(f"{r:7.1f}{b:7.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())

"""The `runlane` commands that talk to a running server: submit, runs, state, events, cancel,
agents. Built on runlane.client alone, so they work where Flask and Celery are not installed.

Exit codes: 0 success (a watched or followed run completed); 1 a watched or followed run ended
otherwise (failed, cancelled, timed out); 2 a usage, API or connection error, printed as
`Error: <title>: <detail>`; 130 interrupted (the run itself goes on).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from runlane.client import DEFAULT_URL, Event, Run, RunlaneAPIError, RunlaneClient

EXIT_OK = 0
EXIT_RUN_NOT_COMPLETED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

_STYLES = {"agent_started": "bold", "agent_thinking": "cyan", "tool_executing": "magenta",
           "tool_completed": "magenta", "agent_completed": "bold green",
           "agent_failed": "bold red", "agent_cancelled": "bold yellow",
           "agent_timed_out": "bold red"}
_SUMMARY_LENGTH = 160

Command = Callable[[argparse.Namespace], int]


# -- arguments ------------------------------------------------------------------------------

def json_argument(value: str) -> Any:
    """`--input` and `--metadata`: JSON text, or `@path` to a JSON file (`@-`: stdin)."""
    source = value
    if value.startswith("@"):
        try:
            source = sys.stdin.read() if value == "@-" else Path(value[1:]).read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {value[1:]}: {exc.strerror}") from None
    try:
        return json.loads(source)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None


def add_commands(sub: Any) -> None:
    """Register the client commands on the `runlane` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"server base URL (default: $RUNLANE_URL or {DEFAULT_URL})")
    common.add_argument("--token", help="bearer token (default: $RUNLANE_TOKEN)")

    submit = sub.add_parser("submit", parents=[common], help="submit a run (and --watch it)")
    submit.add_argument("--agent", required=True, help="agent name (see `runlane agents`)")
    submit.add_argument("--input", type=json_argument, default=None,
                        help="the agent's input: JSON text, or @file.json")
    submit.add_argument("--thread", default="default", help="thread id (default: default)")
    submit.add_argument("--metadata", type=json_argument, default=None, help="JSON object")
    submit.add_argument("--idempotency-key", default=None)
    submit.add_argument("--strategy", choices=("enqueue", "reject", "interrupt"), default=None,
                        help="when the thread is busy (server default: enqueue)")
    submit.add_argument("--watch", action="store_true",
                        help="follow the run's events live; exit 0 only if it completes")
    submit.set_defaults(func=guarded(cmd_submit))

    runs = sub.add_parser("runs", parents=[common],
                          help="list your runs (of one thread with --thread), newest first")
    runs.add_argument("--thread", default=None, help="only this thread's runs")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--json", action="store_true", help="one JSON object per line")
    runs.set_defaults(func=guarded(cmd_runs))

    state = sub.add_parser("state", parents=[common], help="print a run's state as JSON")
    state.add_argument("run_id")
    state.set_defaults(func=guarded(cmd_state))

    events = sub.add_parser("events", parents=[common], help="print a run's events")
    events.add_argument("run_id")
    events.add_argument("--after", type=int, default=0, help="only events with a larger seq")
    events.add_argument("--follow", "-f", action="store_true",
                        help="keep following live until the run ends; exit 0 only if it completes")
    events.add_argument("--json", action="store_true", help="one JSON event per line")
    events.set_defaults(func=guarded(cmd_events))

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a run")
    cancel.add_argument("run_id")
    cancel.set_defaults(func=guarded(cmd_cancel))

    agents = sub.add_parser("agents", parents=[common], help="list the agents you can run")
    agents.set_defaults(func=guarded(cmd_agents))


def _client(args: argparse.Namespace) -> RunlaneClient:
    token = args.token or os.environ.get("RUNLANE_TOKEN")
    if not token:
        raise RunlaneAPIError(0, "No token", "pass --token or set RUNLANE_TOKEN "
                                             "(for development: runlane token --user NAME)")
    return RunlaneClient(args.url or os.environ.get("RUNLANE_URL") or DEFAULT_URL, token)


def guarded(command: Command) -> Command:
    """Print API and connection errors as `Error: <title>: <detail>` (exit 2), never a
    traceback; Ctrl-C exits 130."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except RunlaneAPIError as exc:
            message = f"Error: {exc.title}: {exc.detail}" if exc.detail else f"Error: {exc.title}"
            print(message, file=sys.stderr)
            for error in exc.errors:
                print(f"  {error.get('path', '')}: {error.get('message', '')}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return run


# -- output ---------------------------------------------------------------------------------

def _console() -> Console:
    # soft_wrap: one line per event even when stdout is a pipe (rich would wrap at 80 columns).
    return Console(soft_wrap=True, highlight=False)


def _compact(value: Any, limit: int = _SUMMARY_LENGTH) -> str:
    text = value if isinstance(value, str) else json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(event: Event) -> str:
    """What a person wants to see of an event on one line."""
    data = event.data if isinstance(event.data, dict) else {"value": event.data}
    if event.type == "agent_started":
        return f"{data.get('agent', '')} {_compact(data.get('input'))}"
    if event.type == "agent_thinking":
        return _compact(data.get("text", ""))
    if event.type == "tool_executing":
        arguments = data.get("arguments") or {}
        shown = ", ".join(f"{k}={_compact(json.dumps(v, ensure_ascii=False, default=str), 60)}"
                          for k, v in arguments.items()) \
            if isinstance(arguments, dict) else _compact(arguments)
        return f"{data.get('tool', '?')}({shown})"
    if event.type == "tool_completed":
        if "error" in data:
            return f"{data.get('tool', '?')} failed: {_compact(data['error'])}"
        return f"{data.get('tool', '?')} -> {_compact(data.get('result'))}"
    if event.type == "agent_completed":
        return _compact(data.get("output"))
    if "error" in data or "reason" in data:
        return _compact(data.get("error") or data.get("reason"))
    return _compact(data)


def event_line(event: Event) -> Text:
    return Text.assemble((f"{event.seq:>4}  ", "dim"),
                         (f"{event.type:<16}", _STYLES.get(event.type, "")), " ",
                         summarize(event))


def _final(console: Console, run: Run) -> int:
    style = "bold green" if run.status == "completed" else "bold red"
    line = Text.assemble(f"run {run.run_id} ", (run.status, style))
    if run.error:
        line.append(f": {run.error}")
    console.print(line)
    return EXIT_OK if run.status == "completed" else EXIT_RUN_NOT_COMPLETED


def _follow(client: RunlaneClient, run_id: str, after: int, as_json: bool) -> int:
    """Print each event as it arrives (resuming across dropped sockets), then the outcome."""
    console = _console()
    with console.status(f"run {run_id}: waiting for events…") as status, \
            client.events(run_id, after=after) as stream:
        for event in stream:
            _print_event(console, event, as_json)
            status.update(f"run {run_id}: {event.type} (seq {event.seq})")
    run = client.state(run_id)
    if as_json:
        return EXIT_OK if run.status == "completed" else EXIT_RUN_NOT_COMPLETED
    return _final(console, run)


def _print_event(console: Console, event: Event, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)
    else:
        console.print(event_line(event))


# -- commands -------------------------------------------------------------------------------

def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.submit(args.agent, args.input, thread_id=args.thread,
                            metadata=args.metadata, idempotency_key=args.idempotency_key,
                            multitask_strategy=args.strategy)
        print(run.run_id, flush=True)
        if not args.watch:
            return EXIT_OK
        try:
            return _follow(client, run.run_id, 0, as_json=False)
        except KeyboardInterrupt:
            print(f"stopped watching; the run goes on: runlane events {run.run_id} --follow",
                  file=sys.stderr)
            return EXIT_INTERRUPTED


def cmd_runs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.runs(args.thread, limit=args.limit)
    for run in page.items:
        if args.json:
            print(json.dumps(run.to_json(), ensure_ascii=False, default=str))
        else:
            created = run.created_at.isoformat(timespec="seconds") if run.created_at else "-"
            print(f"{run.run_id}  {run.status:<10} {run.agent:<12} {run.thread_id:<16} {created}"
                  f"  seq {run.last_seq}")
    return EXIT_OK


def cmd_state(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.state(args.run_id)
    print(json.dumps(run.to_json(), indent=2, ensure_ascii=False, default=str))
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.follow:
            return _follow(client, args.run_id, args.after, args.json)
        console = _console()
        for event in client.stored_events(args.run_id, after=args.after):
            _print_event(console, event, args.json)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.cancel(args.run_id)
    print(f"{run.run_id} {run.status}")
    return EXIT_OK


def cmd_agents(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for agent in client.agents():
            print(f"{agent.name:<12} {agent.description}")
    return EXIT_OK

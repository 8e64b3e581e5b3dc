"""Who imports whom (DESIGN.md, docs/architecture.md), checked on the source itself.

- Every product module imports on its own, in an interpreter that has imported no other
  product module: a module that only works once another one was imported first hides an
  import cycle or a missing import, and breaks the first process that imports it first.
- The import graph between product modules has no cycle but the ones in KNOWN_CYCLES.
  Every import counts, at any nesting (function-level, `TYPE_CHECKING`, `try`): a deferred
  import only hides a cycle until the day it runs first. Importing `a.b` runs `a/__init__`,
  so it is an edge to `a` as well.
- The downward-only rules hold: storage imports no Flask, Celery or events; factories no
  Flask and nothing of tasks or webapp; nothing in tasks imports webapp; the web reaches no
  task module; the settings module Celery loads imports nothing of the worker.
- What only checks or issues tokens stays light: `import webapp.auth`, `import
  runlane.tokens` and `runlane token` load no Celery, kombu or SQLAlchemy.

Source analysis and child processes only: nothing here needs Redis or a database.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agents", "domain", "events", "factories", "runlane", "storage", "tasks", "webapp")
TOP_LEVEL_MODULES = ("celeryconfig",)
# Alembic loads these by path inside its own migration context; nothing imports them by name.
NOT_IMPORTED_BY_NAME = ("storage.migrations",)

# Each entry is one strongly connected component of the import graph, allowed for now. A new
# cycle, or a known one that grew, fails the test; so does an entry that no longer is a cycle
# (delete it: the test then keeps it fixed).
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


@dataclass(frozen=True)
class Import:
    """One import statement's dotted name, as written (relative ones resolved)."""

    source: str  # the importing product module
    name: str  # `a.b` for `import a.b`; `a.b.c` and `a.b` for `from a.b import c`
    line: int


def product_modules() -> dict[str, Path]:
    """Every product module by dotted name (packages by their own name), with its file."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    for name in TOP_LEVEL_MODULES:
        modules[name] = ROOT / f"{name}.py"
    return modules


MODULES = product_modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str, source: str | None = None) -> Iterator[Import]:
    """Every import in `module`'s source, wherever it sits (ast.walk visits all nesting)."""
    path = MODULES.get(module, Path(f"{module}.py"))
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node.level, node.module)
            yield Import(module, base, node.lineno)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(module, f"{base}.{alias.name}", node.lineno)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in {"importlib.import_module", "import_module",
                                             "__import__"}):
            yield Import(module, node.args[0].value, node.lineno)


ALL_IMPORTS = [imp for module in MODULES for imp in imports_of(module)]


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def import_graph() -> dict[str, dict[str, list[Import]]]:
    """source -> target -> the imports making that edge, between product modules.

    `import a.b.c` (or `from a.b import c`) makes edges to `a`, `a.b` and `a.b.c` whichever
    of them are product modules. The importer's own ancestors are left out: they ran before
    it did, whatever it imports; an explicit import of one (`from tasks import app` inside
    tasks/) still counts, as `from tasks import app` names `tasks` itself.
    """
    graph: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for imp in ALL_IMPORTS:
        for target in _prefixes(imp.name):
            if target not in MODULES or target == imp.source:
                continue
            if target != imp.name and _within(imp.source, target):
                continue  # an ancestor package run only implicitly: it ran first
            graph[imp.source][target].append(imp)
    return graph


def strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[frozenset[str]]:
    """Tarjan's algorithm; only components of more than one module (self-imports are none)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if node not in index:
            visit(node)
    return found


def _describe(component: Iterable[str], graph: dict[str, dict[str, list[Import]]]) -> str:
    members = set(component)
    lines = [f"cycle between {', '.join(sorted(members))}:"]
    for source in sorted(members):
        for target, imps in sorted(graph.get(source, {}).items()):
            if target in members:
                where = ", ".join(sorted({f"line {imp.line} ({imp.name})" for imp in imps}))
                lines.append(f"  {MODULES[source].relative_to(ROOT)} -> {target}: {where}")
    return "\n".join(lines)


def test_the_import_graph_has_no_cycle_but_the_known_ones():
    graph = import_graph()
    components = set(strongly_connected(graph))
    new = components - KNOWN_CYCLES
    assert not new, "new import cycle(s):\n" + "\n".join(_describe(c, graph) for c in new)
    gone = KNOWN_CYCLES - components
    assert not gone, f"no longer cycles; remove them from KNOWN_CYCLES: {sorted(map(sorted, gone))}"


def test_the_analysis_sees_hidden_imports_and_cycles():
    """The analysis itself, on made-up input: imports under TYPE_CHECKING, in a function or
    behind try count, and a cycle closed only by one of them is found."""
    source = textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from tasks.engine import ExecutionEngine
        def build():
            import webapp.auth
        try:
            from .sibling import thing
        except ImportError:
            pass
    """)
    names = {imp.name for imp in imports_of("factories.engine", source)}
    assert {"tasks.engine.ExecutionEngine", "webapp.auth", "factories.sibling"} <= names
    assert _prefixes("a.b.c") == ["a", "a.b", "a.b.c"]
    graph: dict[str, dict[str, list[Import]]] = {"a": {"a.b": []}, "a.b": {"c": []},
                                                 "c": {"a": []}, "d": {"a": []}}
    assert strongly_connected(graph) == [frozenset({"a", "a.b", "c"})]


# -- downward-only rules -----------------------------------------------------------------------

# The worker's own modules: the web builds a Dispatcher (tasks.dispatch) and reaches none of these.
TASK_MODULES = frozenset({"tasks.run", "tasks.worker", "tasks.reaper", "tasks.lifecycle",
                          "tasks.engine", "tasks.maintenance"})

RULES: list[tuple[str, str, frozenset[str]]] = [
    # (rule, importers: a package or module, forbidden: dotted prefixes)
    ("storage imports no Flask, Celery or events", "storage",
     frozenset({"flask", "werkzeug", "celery", "kombu", "events"})),
    ("factories never touch Flask, the web or the worker", "factories",
     frozenset({"flask", "werkzeug", "webapp", "tasks"})),
    ("no worker code imports the web", "tasks", frozenset({"webapp"})),
    ("the web enqueues by task name, never importing the task modules", "webapp",
     TASK_MODULES),
    ("the Celery settings module imports nothing of the worker", "celeryconfig",
     frozenset({"tasks"})),
    ("the engine's interface sits below both its builder and its implementation",
     "runlane.engine_api", frozenset(set(PACKAGES) - {"domain"})),
    ("the domain words are a leaf", "domain",
     frozenset(set(PACKAGES) - {"domain"}) | {"flask", "celery", "kombu", "redis", "sqlalchemy"}),
    # The web's run logic stays in webapp/ (docs/architecture.md says why) but needs no Flask:
    # a worker or the CLI may import it as it is.
    *[(f"{module} runs without Flask", module,
       frozenset({"flask", "werkzeug", "flask_sock", "simple_websocket", "webapp.extensions",
                  "webapp.auth"}))
      for module in ("webapp.runs", "webapp.streams", "webapp.socket_session",
                     "webapp.socket_replay", "webapp.schemas", "webapp.v1_models")],
    ("the Python client imports no server package", "runlane.client",
     frozenset(set(PACKAGES) - {"runlane"}) | {"flask", "celery", "kombu", "sqlalchemy"}),
]

# The rooms from the top down: a module may import its own layer and the ones below it, never
# one above. `runlane` is split: its shell (the CLI, the supervisor, gunicorn's hooks) sits on
# top, its plumbing (settings, logs, metrics, tokens) below everything but the domain.
LAYERS: list[tuple[str, ...]] = [
    ("webapp", "runlane.cli", "runlane.cli_client", "runlane.supervisor", "runlane.embedded",
     "runlane.gunicorn_conf", "runlane.gunicorn_worker"),
    ("tasks",),
    ("factories",),
    ("events", "agents"),
    ("storage",),
    ("runlane", "celeryconfig"),
    ("domain",),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the most specific prefix naming `module`."""
    best, depth = len(LAYERS), -1
    for index, members in enumerate(LAYERS):
        for prefix in members:
            if _within(module, prefix) and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    return best


def test_every_module_sits_in_a_layer():
    unplaced = sorted(m for m in MODULES if layer_of(m) == len(LAYERS))
    assert not unplaced, f"modules in no layer of LAYERS: {unplaced}"


def test_imports_never_go_up_a_layer():
    graph = import_graph()
    upward = sorted(
        f"{MODULES[source].relative_to(ROOT)}:{imp.line} imports {target} "
        f"({LAYERS[layer_of(target)][0]} is above {LAYERS[layer_of(source)][0]})"
        for source, targets in graph.items() for target, imps in targets.items()
        for imp in imps[:1] if layer_of(target) < layer_of(source)
    )
    assert not upward, "imports going up a layer:\n  " + "\n  ".join(upward)


@pytest.mark.parametrize(("rule", "importers", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_imports_only_go_down(rule: str, importers: str, forbidden: frozenset[str]):
    broken = sorted(
        f"{MODULES[imp.source].relative_to(ROOT)}:{imp.line} imports {imp.name}"
        for imp in ALL_IMPORTS
        if _within(imp.source, importers)
        and any(_within(imp.name, banned) for banned in forbidden)
    )
    assert not broken, f"{rule}:\n  " + "\n  ".join(broken)


def test_the_web_reaches_no_task_module_even_through_the_dispatcher():
    """Direct imports are checked above; this follows them (the web builds a Dispatcher, so
    tasks.dispatch must not pull the task module in, even lazily)."""
    graph = import_graph()
    seen: set[str] = set()
    todo = [module for module in MODULES if _within(module, "webapp")]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, {}))
    reached = sorted(seen & TASK_MODULES)
    assert not reached, f"the web's imports lead to task modules: {reached}"


def _constant(module: str, name: str) -> object:
    """The value a module-level `name = <literal>` assigns, read from the source."""
    for node in ast.parse(MODULES[module].read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{module} assigns no {name}")


def test_the_dispatcher_sends_the_name_the_task_is_registered_under():
    """Read from the source: importing the task modules here would configure the process's
    Celery app for the rest of the session (from this test's environment, which has none)."""
    registered = [
        keyword.value.value
        for node in ast.walk(ast.parse(MODULES["tasks.run"].read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "execute_run"
        for decorator in node.decorator_list if isinstance(decorator, ast.Call)
        for keyword in decorator.keywords
        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant)
    ]
    assert registered == [_constant("tasks.dispatch", "EXECUTE_RUN")]


# -- token code stays light -------------------------------------------------------------------

HEAVY = ("celery", "kombu", "sqlalchemy")


def _scratch_env(tmp_path: Path) -> dict[str, str]:
    """A child interpreter's environment: a scratch instance and a secret, nothing from the
    host (no broker or database unless the caller adds one)."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "RUNLANE_ENV": "development",
        "RUNLANE_INSTANCE_PATH": str(tmp_path),
        "RUNLANE_SECRET_KEY": "architecture-test-" + "x" * 40,
    }


def _loaded_after(code: str, tmp_path: Path) -> list[str]:
    """The top-level modules `code` leaves in sys.modules, run in a fresh interpreter with a
    configuration of its own (a scratch instance, a secret; no broker or database)."""
    env = _scratch_env(tmp_path)
    probe = (code + "\nimport json, sys"
             "\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", probe], check=False, cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("module", ["webapp.auth", "runlane.tokens"])
def test_token_modules_load_no_worker_or_database_code(module: str, tmp_path: Path):
    """Checking a token needs neither Celery nor the database: importing the token side must
    not pull in the composition root (webapp/extensions.py) or anything that reaches it."""
    loaded = _loaded_after(f"import {module}", tmp_path)
    assert module.split(".")[0] in loaded
    heavy = sorted(set(HEAVY) & set(loaded))
    assert not heavy, f"import {module} loads {heavy}"


def test_runlane_token_loads_no_worker_or_database_code(tmp_path: Path):
    """`runlane token` signs a token and prints it; it has no use for Celery or SQLAlchemy."""
    code = textwrap.dedent("""
        import contextlib, io
        import runlane.cli
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = runlane.cli.main(["token", "--user", "x"])
        assert code == 0 and out.getvalue().count(".") == 2, (code, out.getvalue())
    """)
    loaded = _loaded_after(code, tmp_path)
    heavy = sorted(set(HEAVY) & set(loaded))
    assert not heavy, f"runlane token loads {heavy}"


def test_identifier_patterns_have_one_home():
    """domain/ids.py is the leaf every room takes id patterns from; nobody defines its own."""
    import domain.context
    import domain.ids
    import runlane.tokens

    assert runlane.tokens.is_user_id is domain.ids.is_user_id
    assert domain.context.USER_PATTERN is domain.ids.USER_PATTERN
    assert domain.context.ID_PATTERN is domain.ids.ID_PATTERN


# -- every module imports first ----------------------------------------------------------------

# Runs in a child interpreter: imports the third-party modules product code names (never a
# product module), then forks one child per product module, a few at a time, each of which
# imports only that module. A forked child is an interpreter in which no product module was
# ever imported, at the cost of one fork instead of a whole interpreter start per module.
# Only the third-party libraries are shared between the children; a product module that
# reached into a library's submodule without importing it could pass here, nothing else.
_IMPORT_EACH = r'''
import importlib, json, os, sys, tempfile, traceback
product, external, jobs = json.loads(sys.argv[1])
for name in external:
    try:
        importlib.import_module(name)
    except BaseException:
        pass
preloaded = sorted(m for m in sys.modules if m.split(".")[0] in product)
if preloaded:
    print(json.dumps({"<preload>": "imported product modules: " + ", ".join(preloaded)}))
    sys.exit(0)
failures, running, queue = {}, {}, list(sys.argv[2:])
while queue or running:
    while queue and len(running) < jobs:
        module = queue.pop()
        out = tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            code = 0
            try:
                importlib.import_module(module)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        running[pid] = (module, out)
    pid, status = os.wait()
    module, out = running.pop(pid)
    if status:
        out.seek(0)
        failures[module] = out.read().decode(errors="replace")[-3000:]
    out.close()
print(json.dumps(failures))
'''


def _external_modules() -> list[str]:
    """Every non-product module product code imports, at any nesting, as written."""
    names = set()
    for imp in ALL_IMPORTS:
        if imp.name.split(".")[0] not in {*PACKAGES, *TOP_LEVEL_MODULES, "__future__"}:
            names.add(imp.name)
    return sorted(names)


def test_every_product_module_imports_first(tmp_path: Path):
    modules = sorted(m for m in MODULES
                     if not any(_within(m, skip) for skip in NOT_IMPORTED_BY_NAME))
    # webapp.wsgi builds the app on import (that is gunicorn's entry point), so the children
    # get a configuration of their own: a scratch instance, a database it migrates, and a
    # broker address nothing connects to on import. Nothing from the host leaks in.
    env = {**_scratch_env(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'runlane.db'}",
           "RUNLANE_AUTO_MIGRATE": "true",
           "REDIS_URL": "redis://127.0.0.1:9/0"}
    setup = json.dumps([sorted({*PACKAGES, *TOP_LEVEL_MODULES}), _external_modules(),
                        max(2, os.cpu_count() or 2)])
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH, setup, *modules], check=False,
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert not failures, "modules that do not import first:\n" + "\n".join(
        f"--- {module}\n{trace}" for module, trace in sorted(failures.items()))

"""The static contracts, run by the test suite so that CI enforces them: mypy --strict over the
product packages and ruff over the repository, both with the configuration committed in
pyproject.toml (nothing here adds or relaxes an option).

mypy keeps its incremental cache in `.mypy_cache/` at the repository root (gitignored): a
fresh clone pays one full check, later runs only re-check what changed.
"""
from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PRODUCT = {"agents", "domain", "events", "factories", "runlane", "storage", "tasks", "webapp",
           "celeryconfig.py"}


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)
    print(f"$ python -m {' '.join(args)}  ({time.monotonic() - started:.1f} s, "
          f"exit {done.returncode})")
    return done


def _report(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"


def test_the_committed_configuration_is_strict() -> None:
    """The contract itself: strict mypy over every product package, and no global escape."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["mypy"]
    assert config["strict"] is True
    assert set(config["files"]) == PRODUCT
    assert "ignore_missing_imports" not in config, "list the untyped libraries in an override"
    for override in config.get("overrides", []):
        if override.get("ignore_missing_imports"):
            modules = override["module"]
            modules = [modules] if isinstance(modules, str) else modules
            assert all(not m.startswith(tuple(p.removesuffix(".py") for p in PRODUCT))
                       for m in modules), f"a product module escapes type checking: {modules}"


def test_mypy_strict() -> None:
    done = _run("mypy", "--config-file", str(PYPROJECT))
    assert done.returncode == 0, "mypy found errors:\n" + _report(done)


def test_ruff_check() -> None:
    done = _run("ruff", "check", "--output-format", "concise", "--no-fix", ".")
    assert done.returncode == 0, "ruff found problems:\n" + _report(done)

"""The installed versions of the libraries whose internals Runlane's adapters use are within
the bounds setup.cfg declares, and setup.cfg bounds each of them from above: the contract
tests next to this file were run against the versions inside those bounds, and a release
outside them has not been checked."""
from __future__ import annotations

import configparser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"

# Each library with an adapter, and the adapter that uses its internals.
ADAPTED = {
    "celery": "tasks/celery_app.py, tasks/dispatch.py",
    "kombu": "tasks/broker.py",
    "redis": "runlane/redis_wire.py",
    "simple-websocket": "webapp/socket_conn.py",
    "flask-sock": "webapp/socket_conn.py",
}
# Used through an adapter too (webapp/socket_conn.py speaks wsproto on simple-websocket's
# connection), but only checked when setup.cfg names it: it comes with simple-websocket.
CHECKED_WHEN_DECLARED = {"wsproto": "webapp/socket_conn.py"}


def declared_requirements() -> dict[str, list[Requirement]]:
    """setup.cfg's install_requires, by canonical name (a name may appear more than once,
    e.g. `celery[redis]` and `celery` with a bound of its own)."""
    parser = configparser.ConfigParser()
    assert parser.read(SETUP_CFG), f"cannot read {SETUP_CFG}"
    raw = parser.get("options", "install_requires", fallback="")
    found: dict[str, list[Requirement]] = {}
    for line in raw.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        found.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    return found


DECLARED = declared_requirements()


def installed(name: str) -> Version:
    try:
        return Version(metadata.version(name))
    except metadata.PackageNotFoundError:
        pytest.fail(f"{name} is not installed")


@pytest.mark.parametrize("name", sorted(ADAPTED))
def test_the_library_is_declared_in_setup_cfg(name: str) -> None:
    assert canonicalize_name(name) in DECLARED, (
        f"setup.cfg's install_requires does not name {name}, whose internals "
        f"{ADAPTED[name]} uses: declare it with the bounds its contract tests passed on")


@pytest.mark.parametrize("name", sorted(ADAPTED))
def test_the_library_is_bounded_from_above(name: str) -> None:
    requirements = DECLARED.get(canonicalize_name(name), [])
    uppers = [spec for req in requirements for spec in req.specifier
              if spec.operator in ("<", "<=", "~=", "==", "===")]
    assert uppers, (
        f"setup.cfg bounds {name} from below only ({', '.join(map(str, requirements)) or '-'}): "
        f"{ADAPTED[name]} relies on its internals, so a release nobody ran the contract "
        f"tests on must not be installed; add an upper bound (<next minor)")


@pytest.mark.parametrize("name", sorted({**ADAPTED, **CHECKED_WHEN_DECLARED}))
def test_the_installed_version_is_within_the_declared_bounds(name: str) -> None:
    requirements = DECLARED.get(canonicalize_name(name), [])
    if not requirements:
        if name in CHECKED_WHEN_DECLARED:
            pytest.skip(f"setup.cfg does not name {name}")
        pytest.fail(f"setup.cfg does not name {name}")
    version = installed(name)
    for requirement in requirements:
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name} {version} is installed, outside setup.cfg's `{requirement}`: the "
            f"contract tests of {({**ADAPTED, **CHECKED_WHEN_DECLARED})[name]} ran on "
            f"another version; fix the installation, or check the adapter against this "
            f"version and move the bound")

"""setup.cfg's lower bounds and .ci/constraints-min.txt must name the same versions.

constraints-min.txt pins every direct dependency (install_requires and the test extra) to
its floor, the `>=` bound in setup.cfg; .ci/run installs it in .ci/venv-min and runs the unit
and integration suites there. A floor changed in one file only would test a version nobody
claims, or claim one nobody tests, so this fails (exit 1) when the two disagree, when a direct
dependency has no `>=` floor, or when another extra (postgres) floors a shared one elsewhere.

    python3 .ci/check_floors.py          # check (what .ci/run does)
    python3 .ci/check_floors.py --write  # regenerate constraints-min.txt from setup.cfg

Standard library only: it runs before any virtualenv exists.
"""
from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP_CFG = ROOT / "setup.cfg"
CONSTRAINTS = ROOT / ".ci" / "constraints-min.txt"
TESTED_EXTRAS = ("test",)
HEADER = """\
# The floor of every direct dependency (install_requires and the test extra), one `==` each.
# Generated from setup.cfg's `>=` bounds by `python3 .ci/check_floors.py --write` and kept
# equal to them: .ci/run fails when the two disagree. .ci/run installs these in .ci/venv-min
# and runs the unit and integration suites on them; .ci/floors.md says why each floor is
# where it is.
"""
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([0-9][0-9A-Za-z.+!-]*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def same_version(a: str, b: str) -> bool:
    """Equal as release numbers: `5.4` and `5.4.0` are one version."""
    def key(v: str) -> list[str]:
        parts = v.split(".")
        while len(parts) > 1 and parts[-1] == "0":
            parts.pop()
        return parts
    return key(a) == key(b)


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def floors(errors: list[str]) -> tuple[dict[str, tuple[str, str]], dict[str, dict[str, str]]]:
    """{canonical name: (name as written, floor)} of the direct dependencies, and the floors
    the other extras give, by extra."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(SETUP_CFG)
    extras = cfg["options.extras_require"] if cfg.has_section("options.extras_require") else {}

    def parse(requirements: list[str], where: str) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for requirement in requirements:
            match = _REQUIREMENT.match(requirement.split(";")[0].strip())
            if match is None:
                errors.append(f"{where}: cannot read {requirement!r}")
                continue
            name, spec = match.group(1), match.group(2)
            lower = [s.strip()[2:].strip() for s in spec.split(",") if s.strip().startswith(">=")]
            if len(lower) != 1:
                errors.append(f"{where}: {requirement!r} needs exactly one `>=` floor")
                continue
            found[canonical(name)] = (name, lower[0])
        return found

    direct = parse(lines(cfg["options"].get("install_requires", "")), "install_requires")
    for extra in TESTED_EXTRAS:
        for key, value in parse(lines(extras.get(extra, "")), f"extras_require.{extra}").items():
            if key in direct and not same_version(direct[key][1], value[1]):
                errors.append(f"{value[0]}: floor {direct[key][1]} in install_requires, "
                              f"{value[1]} in extras_require.{extra}")
            direct.setdefault(key, value)
    others: dict[str, dict[str, str]] = {}
    for extra in extras:
        if extra in TESTED_EXTRAS:
            continue
        for requirement in lines(extras[extra]):
            match = _REQUIREMENT.match(requirement.split(";")[0].strip())
            if match and canonical(match.group(1)) in direct:
                bound = [s.strip()[2:].strip() for s in match.group(2).split(",")
                         if s.strip().startswith(">=")]
                others.setdefault(extra, {})[canonical(match.group(1))] = bound[0] if bound else ""
    return direct, others


def pins(errors: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            errors.append(f"constraints-min.txt:{number}: not `name==version`: {line!r}")
            continue
        key = canonical(match.group(1))
        if key in found:
            errors.append(f"constraints-min.txt:{number}: {match.group(1)} pinned twice")
        found[key] = match.group(2)
    return found


def main(argv: list[str]) -> int:
    errors: list[str] = []
    direct, others = floors(errors)
    for extra, bounds in others.items():
        for key, bound in bounds.items():
            if not same_version(bound, direct[key][1]):
                errors.append(f"extras_require.{extra}: {direct[key][0]} floor {bound or 'none'}, "
                              f"but {direct[key][1]} where it is tested")
    if argv == ["--write"]:
        if errors:
            print("\n".join(errors), file=sys.stderr)
            return 1
        body = "".join(f"{name}=={floor}\n" for name, floor in direct.values())
        CONSTRAINTS.write_text(HEADER + body)
        print(f"wrote {CONSTRAINTS.relative_to(ROOT)}: {len(direct)} floors")
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    pinned = pins(errors) if CONSTRAINTS.exists() else {}
    if not CONSTRAINTS.exists():
        errors.append(f"{CONSTRAINTS.relative_to(ROOT)} is missing")
    for key, (name, floor) in direct.items():
        if key not in pinned:
            errors.append(f"{name}: floor {floor} in setup.cfg, not in constraints-min.txt")
        elif not same_version(pinned[key], floor):
            errors.append(f"{name}: floor {floor} in setup.cfg, {pinned[key]} in "
                          "constraints-min.txt")
    for key in pinned.keys() - direct.keys():
        errors.append(f"{key}: in constraints-min.txt but no direct dependency in setup.cfg")
    if errors:
        print("floors: setup.cfg and .ci/constraints-min.txt disagree "
              "(fix one, or regenerate with `python3 .ci/check_floors.py --write`):",
              file=sys.stderr)
        print("\n".join(f"  {e}" for e in errors), file=sys.stderr)
        return 1
    print(f"floors: .ci/constraints-min.txt agrees with setup.cfg ({len(direct)} direct "
          "dependencies)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

from __future__ import annotations

import subprocess
import sys

import pytest

from agents.registry import default_registry
from agents.tools import ToolError, calculate, default_tools, word_count


@pytest.mark.parametrize("expression, expected", [
    ("1+2*3", 7), ("(1+2)*3", 9), ("7//2", 3), ("7%4", 3), ("2**10", 1024),
    ("-3+ +5", 2), ("1/4", 0.25), ("2.5*2", 5.0), ("3**2+1", 10),
])
def test_calculator_evaluates_arithmetic(expression, expected):
    assert calculate(expression) == expected


@pytest.mark.parametrize("expression", [
    "__import__('os')", "a+1", "().__class__", "abs(-1)", "'a'*3", "[1,2]", "1 if 1 else 2",
    "True+1", "1<2", "lambda: 1", "x.y",
])
def test_calculator_rejects_names_calls_attributes_and_non_numbers(expression):
    with pytest.raises(ToolError):
        calculate(expression)


@pytest.mark.parametrize("expression", ["1/0", "1//0", "5%0", "0.0/0"])
def test_calculator_turns_division_by_zero_into_tool_error(expression):
    with pytest.raises(ToolError):
        calculate(expression)


@pytest.mark.parametrize("expression", ["2**65", "9**1000000", "2**-65"])
def test_calculator_rejects_a_huge_exponent(expression):
    with pytest.raises(ToolError, match="exponent"):
        calculate(expression)


def test_calculator_rejects_syntax_errors_and_overlong_expressions():
    with pytest.raises(ToolError):
        calculate("1+")
    with pytest.raises(ToolError, match="too long"):
        calculate("1+" * 100 + "1")


def test_calculator_turns_float_overflow_into_tool_error():
    with pytest.raises(ToolError):
        calculate("(10.0**64)**64")


def test_calculator_bounds_nested_powers_quickly():
    # Each `**` has exponent 64, but the nesting makes 9**(64**5): the process never finishes.
    code = (
        "from agents.tools import calculate, ToolError\n"
        "try:\n    calculate('((((9**64)**64)**64)**64)**64')\n"
        "except ToolError:\n    print('rejected')\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("calculator was still computing after 5 s")
    assert done.stdout.strip() == "rejected"


def test_word_count_counts_words_and_characters():
    assert word_count("the quick  brown\nfox") == {"words": 4, "characters": 20}
    assert word_count("") == {"words": 0, "characters": 0}


def test_default_tools_are_fresh_maps_of_the_builtin_tools():
    first, second = default_tools(), default_tools()
    assert set(first) == {"calculator", "word_count"}
    assert first is not second
    assert first["calculator"].function("6*7") == 42


def test_default_registry_knows_echo_and_demo_only():
    registry = default_registry()
    assert [a.name for a in registry] == ["demo", "echo"]
    assert "demo" in registry and "nope" not in registry
    assert registry.get("nope") is None

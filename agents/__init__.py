"""Agents: the base class, built-in agents and tools, and the name → class registry."""

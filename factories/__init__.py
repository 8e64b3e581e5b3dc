"""Factories assemble per-request and per-run objects; they implement nothing themselves."""
from __future__ import annotations

from factories.agents import AgentInstanceFactory
from factories.bridge import WebSocketBridgeFactory
from factories.context import ContextSigner, sign_context, verify_context
from factories.engine import ExecutionEngineFactory

__all__ = [
    "AgentInstanceFactory",
    "ContextSigner",
    "ExecutionEngineFactory",
    "WebSocketBridgeFactory",
    "sign_context",
    "verify_context",
]

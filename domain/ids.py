"""Identifier patterns: the one definition of what a thread, run or user id may be.

A leaf: the token verifier (runlane/tokens.py), the context (factories/context.py) and the
web's edge checks all import it, and it imports nothing of Runlane.
"""
from __future__ import annotations

import re

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
USER_PATTERN = r"^[A-Za-z0-9_.@-]{1,128}$"
_ID = re.compile(ID_PATTERN)
_USER = re.compile(USER_PATTERN)


def is_id(value: object) -> bool:
    """Whether `value` is a thread or run id. Matches the whole string: `$` alone would let a
    trailing newline through."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def is_user_id(value: object) -> bool:
    """Whether `value` is a user id (a token's `sub`), matched as a whole like `is_id`."""
    return isinstance(value, str) and _USER.fullmatch(value) is not None

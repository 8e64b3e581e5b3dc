"""Channel names: the only place a Redis channel string is built from a user id."""
from __future__ import annotations


def user_channel(prefix: str, user_id: str) -> str:
    """The pub/sub channel carrying every event of `user_id`'s runs."""
    return f"{prefix}:user:{user_id}"


def user_of_channel(prefix: str, channel: str) -> str | None:
    """Inverse of `user_channel`; None for a channel this prefix did not make."""
    head = f"{prefix}:user:"
    return channel[len(head):] if channel.startswith(head) else None

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from events.channels import user_channel, user_of_channel

PREFIX = "runlane"
user_ids = st.from_regex(r"\A[A-Za-z0-9_.@-]{1,128}\Z")


@given(user_ids, user_ids)
def test_user_channel_never_collides_for_distinct_user_ids(a, b):
    assert (user_channel(PREFIX, a) == user_channel(PREFIX, b)) == (a == b)


@given(user_ids)
def test_user_of_channel_inverts_user_channel(user_id):
    assert user_of_channel(PREFIX, user_channel(PREFIX, user_id)) == user_id


@given(user_ids)
def test_user_of_channel_returns_none_for_another_prefix(user_id):
    channel = user_channel("other", user_id)
    assert user_of_channel(PREFIX, channel) is None
    assert user_of_channel("runlan", user_channel(PREFIX, user_id)) is None
    assert user_of_channel("runlane2", user_channel(PREFIX, user_id)) is None


def test_user_channel_has_the_documented_shape():
    assert user_channel("p", "alice") == "p:user:alice"


def test_user_of_channel_returns_none_for_unrelated_channels():
    assert user_of_channel(PREFIX, "runlane:admin:alice") is None
    assert user_of_channel(PREFIX, "alice") is None

"""A consumer's sink starts at its owner's newest cursor from the moment the router holds it:
a tail check that runs while the subscription is still being confirmed must not take the
owner's whole history for lost publishes."""
from __future__ import annotations

import redis

from events.router import SocketRouter
from webapp.streams import RunWatch


def test_a_tail_check_while_attaching_finds_nothing_lost(users, app, redis_url):
    st = app.extensions["runlane"]
    alice = users.user("alice")
    run = alice.submit("t", "echo", {"x": 1})["run_id"]
    assert alice.wait_for_state(run, {"completed"})["status"] == "completed"
    router = SocketRouter(redis_url, prefix=st.settings.channel_prefix,
                          cursors=st.events.last_cursors, tail_interval=0.05)
    admin = redis.Redis.from_url(redis_url)
    router.start()
    try:
        assert router.connected.wait(5)
        # Redis holds the SUBSCRIBE's reply back for a while: the attach waits, the router's
        # tail check runs many times meanwhile.
        admin.execute_command("CLIENT", "PAUSE", "600", "ALL")
        with RunWatch(router=router, log=st.events, user_id=alice.user_id, run_id=run) as watch:
            sink = watch._sink
            assert sink is not None
            items = []
            while (item := sink.pop()) is not None:
                items.append(item)
            tails = [p for kind, p, _ in items if kind == "control" and p["type"] == "__tail__"]
            assert tails == []
            assert sink.cursor == st.events.last_cursor(alice.user_id)
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        router.stop()


def test_the_missed_count_ignores_cursors_offered_above_the_check(app):
    """`ahead` may hold cursors past the one the check looks up to: they do not reduce
    what is missing below it."""
    from events.sink import SocketSink

    sink = SocketSink(8, cursor=10)
    for cursor in (12, 20, 21):
        sink.offer({"cursor": cursor}, "{}")
    assert sink.missing(13) == 2  # 11 and 13
    assert sink.missing(11) == 1
    assert sink.missing(10) == 0

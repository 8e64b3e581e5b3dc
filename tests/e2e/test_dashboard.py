"""The dashboard at `/` in a real headless Chromium, against the real server, worker and Redis.

Playwright for Python drives Debian's `chromium` (Playwright cannot download its own browser
here). Without Chromium or Playwright the tests are skipped, saying which one is missing.
Screenshots land in tests/artifacts/; with RUNLANE_TEST_UPDATE_SCREENSHOTS=1 the copies in
docs/img/ that docs/dashboard.md shows are refreshed too (off by default: a test run never
dirties the tree).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import User

pytest.importorskip("playwright.sync_api",
                    reason="playwright is not installed: pip install -e '.[test]'")
from playwright.sync_api import (
    Browser,
    Page,
    WebSocketRoute,
    expect,
    sync_playwright,
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_IMG = ROOT / "docs" / "img"
CHROMIUM = (os.environ.get("RUNLANE_TEST_CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT = 30_000  # ms: generous upper bounds for waits, never a measured duration
RUN_URL = re.compile(r"#/runs/([A-Za-z0-9_-]+)$")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium executable found (apt-get install chromium, or set "
    "RUNLANE_TEST_CHROMIUM): the dashboard's browser tests need a real browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module; each user gets a context (separate sessionStorage)."""
    assert CHROMIUM is not None
    expect.set_options(timeout=WAIT)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Tab:
    """One signed-in page plus what it saw: console errors and the socket frames it received."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        self.frames: list[str] = []
        self.submitted: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _console(self, message: Any) -> None:
        if message.type != "error" or "Failed to load resource" in message.text:
            return  # Chromium logs each 404 answer (a new thread, someone else's run): expected
        if message.text.endswith("failed: Invalid frame header"):
            # Under the werkzeug test server flask-sock writes an HTTP response after a socket
            # ends (flask-sock issue #77; not under gunicorn), which Chromium reports if it
            # still reads the connection: a quirk of the test server, not of the page.
            return
        self.errors.append(message.text)

    def _frame(self, payload: str | bytes) -> None:
        self.frames.append(payload if isinstance(payload, str) else payload.decode())

    def events_received(self) -> list[dict[str, Any]]:
        """Event frames (those with a seq) this page's sockets received."""
        parsed = [json.loads(f) for f in self.frames]
        return [f for f in parsed if isinstance(f, dict) and "seq" in f]

    def sign_in(self, user: User) -> None:
        self.page.goto(self.base_url + "/")
        token = self.page.get_by_label("API token")
        token.fill(user.token)
        token.press("Enter")  # the keyboard submits the form
        # The name shown comes from the socket's `ready` frame: the server's verified identity.
        expect(self.page.locator("#who")).to_have_text(user.user_id)
        expect(self.page.locator("#connection")).to_have_text("Live")

    def use_thread(self, thread: str) -> None:
        field = self.page.get_by_label("Thread", exact=True)
        field.fill(thread)
        field.press("Enter")
        expect(self.page.locator("#runs-status")).to_have_text("No runs in this thread yet.")

    def submit(self, agent: str, data: Any) -> str:
        self.page.get_by_role("link", name="New run").click()
        self.page.get_by_label("Agent").select_option(agent)
        self.page.get_by_label("Input (JSON)").fill(json.dumps(data))
        expect(self.page.locator("#input-errors > li")).to_have_count(0)
        self.page.get_by_role("button", name="Submit run").click()
        self.page.wait_for_url(RUN_URL)
        match = RUN_URL.search(self.page.url)
        assert match is not None
        self.submitted.append(match.group(1))
        return match.group(1)

    def timeline(self) -> list[tuple[int, str]]:
        return [(int(seq), kind) for seq, kind in self.page.eval_on_selector_all(
            "#timeline > li", "items => items.map(i => [i.dataset.seq, i.dataset.type])")]

    def wait_for_status(self, status: str) -> None:
        expect(self.page.locator("#run-status")).to_have_text(status)

    def cancel_leftovers(self, user: User) -> None:
        """After a failure, stop what is still running so the worker is free for other tests."""
        for run_id in self.submitted:
            user.post(f"/api/agents/v2/{run_id}/cancel")


def stored_events(user: User, run_id: str) -> list[dict[str, Any]]:
    page = user.get(f"/api/agents/v2/{run_id}/events?after=0&limit=1000")
    assert page.status_code == 200, page.text
    return page.json()["items"]  # type: ignore[no-any-return]


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("RUNLANE_TEST_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / name)
    return path


@pytest.mark.timeout(240)
def test_a_user_runs_demo_watches_every_event_reloads_to_the_full_timeline_and_cancels(
    users: Any, live_server: str, browser: Browser
) -> None:
    alice = users.user("alice")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Tab(context.new_page(), live_server)
    page = tab.page
    try:
        tab.sign_in(alice)
        served = requests.get(live_server + "/", timeout=10)
        policy = served.headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy
        assert "<script>" not in served.text and " style=" not in served.text  # nothing inline
        thread = f"dash-{uuid.uuid4().hex[:8]}"
        tab.use_thread(thread)

        # Every visible form control has a label (the tests find them by it, too).
        unlabelled = page.evaluate("""() => [
            ...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.offsetParent !== null && e.labels.length === 0).map(e => e.id)""")
        assert unlabelled == []

        # The editor checks the input against the agent's schema and says what is wrong, inline.
        page.get_by_label("Agent").select_option("demo")
        editor = page.get_by_label("Input (JSON)")
        editor.fill('{"steps": 50, "colour": "red"}')
        errors = page.locator("#input-errors")
        expect(errors).to_contain_text("input/steps: must be at most 20")
        expect(errors).to_contain_text("input/colour: is not an allowed property")
        expect(editor).to_have_attribute("aria-invalid", "true")
        editor.fill('{"steps": 3,')
        expect(errors).to_contain_text("not valid JSON")
        screenshot(page, "dashboard-new-run.png")
        page.set_viewport_size({"width": 390, "height": 844})
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, "the form scrolls sideways on a 390 px wide screen"
        page.set_viewport_size({"width": 1280, "height": 900})
        page.get_by_role("button", name="Submit run").click()
        expect(editor).to_be_focused()  # nothing was sent; the editor has the focus
        assert alice.get(f"/api/agents/v2/thread/{thread}/runs").status_code == 404

        # A demo run whose text is markup: it must show up as text, never as elements.
        markup = "<img src=x id=injected onerror=alert(1)><b>bold</b>"
        run_id = tab.submit("demo", {"steps": 3, "delay_ms": 200, "text": markup})
        tab.wait_for_status("completed")
        stored = stored_events(alice, run_id)
        expected = [(e["seq"], e["type"]) for e in stored]
        assert [seq for seq, _ in expected] == list(range(1, 12))  # 1 + 3 x 3 + 1 events
        expect(page.locator("#timeline > li")).to_have_count(len(expected))
        assert tab.timeline() == expected
        kinds = [kind for _, kind in expected]
        assert kinds[0] == "agent_started" and kinds[-1] == "agent_completed"
        assert {"agent_thinking", "tool_executing", "tool_completed"} <= set(kinds)
        timeline = page.locator("#timeline")
        expect(timeline).to_contain_text("Step 1: computing 1 squared plus one")  # thinking
        expect(timeline).to_contain_text('"expression": "1**2+1"')  # tool arguments
        expect(page.locator('#timeline > li[data-seq="4"] pre')).to_have_text("2")  # its result
        expect(timeline).to_contain_text("completed 3 steps")  # the output
        expect(timeline).to_contain_text(markup)  # the text, verbatim
        assert page.locator("#injected, #timeline b").count() == 0
        expect(page.locator("#run-progress")).to_be_hidden()
        # The page's socket carried every one of those events, in order.
        live = [(e["seq"], e["type"]) for e in tab.events_received() if e["run_id"] == run_id]
        assert live == expected

        screenshot(page, "dashboard-run.png")
        page.set_viewport_size({"width": 390, "height": 844})
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, "the run page scrolls sideways on a 390 px wide screen"
        page.locator("#run-title").scroll_into_view_if_needed()
        screenshot(page, "dashboard-run-narrow.png", full_page=False)
        page.set_viewport_size({"width": 1280, "height": 900})

        # After a reload the timeline is rebuilt from the log: the same, complete list.
        page.reload()
        expect(page.locator("#connection")).to_have_text("Live")
        tab.wait_for_status("completed")
        expect(page.locator("#timeline > li")).to_have_count(len(expected))
        assert tab.timeline() == expected
        expect(page.locator(f'.run-link[data-run-id="{run_id}"] .badge')).to_have_text("completed")

        # A slow run: its events stream in while it runs, with a progress indicator; then cancel.
        slow_id = tab.submit("demo", {"steps": 20, "delay_ms": 1000})
        expect(page.locator("#run-progress")).to_be_visible()
        # Opening the run read its log once; five or more events can only have come live.
        expect(page.locator("#timeline > li").nth(4)).to_be_attached()
        tab.wait_for_status("running")
        expect(page.locator("#run-progress-text")).to_contain_text("events so far")
        screenshot(page, "dashboard-running.png")
        page.get_by_role("button", name="Cancel run").focus()
        page.keyboard.press("Enter")
        tab.wait_for_status("cancelled")
        last = page.locator("#timeline > li").last
        expect(last).to_have_attribute("data-type", "agent_cancelled")
        expect(page.locator("#run-progress")).to_be_hidden()
        expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
        assert alice.get(f"/api/agents/v2/{slow_id}/state").json()["status"] == "cancelled"
        slow = [(e["seq"], e["type"]) for e in stored_events(alice, slow_id)]
        assert tab.timeline() == slow
        expect(page.locator(f'.run-link[data-run-id="{slow_id}"] .badge')).to_have_text("cancelled")
        expect(page.locator(f'.run-link[data-run-id="{run_id}"] .badge')).to_have_text("completed")

        # Signing out forgets the token and takes every run and event off the page.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("API token")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('runlane.token')") is None
        assert page.locator(".run-link, #timeline > li").count() == 0
        assert tab.errors == []
    finally:
        tab.cancel_leftovers(alice)
        context.close()


@pytest.mark.timeout(180)
def test_a_second_user_sees_none_of_the_first_users_runs_or_events(
    users: Any, live_server: str, browser: Browser
) -> None:
    alice, bob = users.user("alice"), users.user("bob")
    thread = f"shared-{uuid.uuid4().hex[:8]}"  # the same thread name: still two threads
    contexts = [browser.new_context(), browser.new_context()]
    try:
        tab_a, tab_b = (Tab(c.new_page(), live_server) for c in contexts)
        tab_a.sign_in(alice)
        tab_b.sign_in(bob)  # bob's socket is live before alice's run starts
        tab_a.use_thread(thread)
        tab_b.use_thread(thread)

        run_a = tab_a.submit("demo", {"steps": 2, "delay_ms": 50})
        tab_a.wait_for_status("completed")
        run_b = tab_b.submit("demo", {"steps": 1})
        tab_b.wait_for_status("completed")

        # Bob's socket got his own run's events (so it was recording) and nothing of alice's.
        seen_b = tab_b.events_received()
        assert [e["seq"] for e in seen_b if e["run_id"] == run_b] == [1, 2, 3, 4, 5]
        assert {e["run_id"] for e in seen_b} == {run_b}
        assert not [f for f in tab_b.frames if run_a in f or alice.user_id in f]
        assert not [f for f in tab_a.frames if run_b in f or bob.user_id in f]

        # Each list shows only its owner's run, though both threads have the same name.
        for tab, mine in ((tab_a, run_a), (tab_b, run_b)):
            links = tab.page.locator(".run-link")
            expect(links).to_have_count(1)
            expect(links).to_have_attribute("data-run-id", mine)

        # So does the list of all of one's threads.
        tab_b.page.get_by_label("List the runs of all my threads").check()
        expect(tab_b.page.locator(".run-link .run-thread")).to_have_text([f"thread {thread}"])
        expect(tab_b.page.locator(".run-link")).to_have_attribute("data-run-id", run_b)

        # Bob opening alice's run by its id gets "no such run" and no timeline.
        tab_b.page.goto(f"{live_server}/#/runs/{run_a}")
        expect(tab_b.page.locator("#run-missing")).to_be_visible()
        expect(tab_b.page.locator("#run-body")).to_be_hidden()
        expect(tab_b.page.locator("#timeline > li")).to_have_count(0)
        expect(tab_b.page.locator(f'.run-link[data-run-id="{run_a}"]')).to_have_count(0)
        assert tab_a.errors == [] and tab_b.errors == []
    finally:
        for context in contexts:
            context.close()


@pytest.mark.timeout(180)
def test_the_page_reconnects_after_its_socket_drops_resumes_and_loses_no_event(
    users: Any, live_server: str, browser: Browser
) -> None:
    alice = users.user("alice")
    context = browser.new_context()
    page = context.new_page()
    sockets: list[tuple[WebSocketRoute, WebSocketRoute]] = []  # (page side, server side)
    sent: list[dict[str, Any]] = []

    def relay(route: WebSocketRoute) -> None:
        """Pass frames through unchanged, so the test can cut the connection at will."""
        server = route.connect_to_server()
        index = len(sockets)

        def to_server(message: str | bytes) -> None:
            sent.append({"connection": index, **json.loads(message)})
            server.send(message)

        route.on_message(to_server)
        sockets.append((route, server))

    page.route_web_socket(re.compile(r"/api/agents/v2/ws$"), relay)
    tab = Tab(page, live_server)
    try:
        tab.sign_in(alice)
        tab.use_thread(f"drop-{uuid.uuid4().hex[:8]}")
        run_id = tab.submit("demo", {"steps": 6, "delay_ms": 400})
        expect(page.locator("#timeline > li").nth(2)).to_be_attached()
        route, server = sockets[0]
        route.close(code=4008, reason="the test cuts the socket")  # as for a slow consumer
        server.close()
        deadline = 200  # x 100 ms: a generous bound on the page's backoff, not a measurement
        while len(sockets) < 2 and deadline:
            page.wait_for_timeout(100)
            deadline -= 1
        assert len(sockets) == 2, "the page did not reconnect"
        expect(page.locator("#connection")).to_have_text("Live")
        tab.wait_for_status("completed")
        stored = [(e["seq"], e["type"]) for e in stored_events(alice, run_id)]
        expect(page.locator("#timeline > li")).to_have_count(len(stored))
        assert tab.timeline() == stored
        first, second = ([m for m in sent if m["connection"] == i] for i in (0, 1))
        assert [m["type"] for m in first] == ["auth"]  # browsers authenticate with a frame
        assert second[0]["type"] == "auth"
        assert [m["type"] for m in second][1:2] == ["resume"]
        assert isinstance(second[1]["cursor"], int) and second[1]["cursor"] > 0
        assert tab.errors == []
    finally:
        tab.cancel_leftovers(alice)
        context.close()


@pytest.mark.timeout(180)
def test_runs_made_outside_the_page_are_listed_and_a_runs_outcome_and_duration_come_first(
    users: Any, live_server: str, browser: Browser
) -> None:
    alice = users.user("alice")
    # Runs made with curl or the CLI, in threads the page has never heard of.
    done = alice.submit(f"cli-{uuid.uuid4().hex[:8]}", "demo", {"steps": 2})
    failed = alice.submit(f"cli-{uuid.uuid4().hex[:8]}", "demo", {"steps": 2, "fail_at": 2})
    assert alice.wait_for_state(done["run_id"], {"completed"})["status"] == "completed"
    assert alice.wait_for_state(failed["run_id"], {"failed"})["status"] == "failed"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Tab(context.new_page(), live_server)
    page = tab.page
    try:
        tab.sign_in(alice)
        expect(page.get_by_label("List the runs of all my threads")).to_be_checked()
        expect(page.locator(".run-link")).to_have_count(2)

        # The starting input holds what matters, not the off-by-default test switch.
        page.get_by_label("Agent").select_option("demo")
        started = json.loads(page.get_by_label("Input (JSON)").input_value())
        assert started == {"steps": 3, "delay_ms": 0}

        page.locator(f'.run-link[data-run-id="{done["run_id"]}"]').click()
        tab.wait_for_status("completed")
        result = page.locator("#run-result")
        expect(result).to_be_visible()
        expect(page.locator("#result-title")).to_have_text("Output")
        expect(page.locator("#run-output")).to_contain_text('"summary": "completed 2 steps"')
        expect(page.locator("#run-duration")).to_have_text(re.compile(r"^\d+(\.\d)? (ms|s)$|min"))
        expect(page.locator("#timeline > li")).to_have_count(8)  # 1 + 2 x 3 + 1 events
        result_box = result.bounding_box()
        timeline_box = page.locator("#timeline").bounding_box()
        assert result_box and timeline_box and result_box["y"] < timeline_box["y"]

        page.locator(f'.run-link[data-run-id="{failed["run_id"]}"]').click()
        tab.wait_for_status("failed")
        expect(page.locator("#result-title")).to_have_text("Error")
        expect(page.locator("#run-output")).to_contain_text("demo failed at step 2 as asked")

        # A live run's outcome arrives with its last event, without a reload.
        live = tab.submit("demo", {"steps": 1})
        tab.wait_for_status("completed")
        expect(page.locator("#run-output")).to_contain_text('"summary": "completed 1 steps"')
        expect(page.locator("#run-duration")).not_to_have_text("")
        assert live in tab.submitted

        # Choosing one thread shows only that thread, and the choice is kept.
        tab.use_thread(f"empty-{uuid.uuid4().hex[:8]}")
        expect(page.get_by_label("List the runs of all my threads")).not_to_be_checked()
        assert tab.errors == []
    finally:
        tab.cancel_leftovers(alice)
        context.close()

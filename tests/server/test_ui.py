"""The inbox in headless Chromium: approve a pending call and watch the thread finish.

Uses Debian's `chromium` through the `browser` fixture of tests/server_support.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from server_support import (
    DEFAULT_KEYS,
    UI_WAIT_MS,
    LiveServer,
    deploy_model,
    signed_in_page,
    start_server,
)
from threadline import Agent
from threadline.runtime import Runtime
from threadline.stores import SQLiteStore

pytestmark = pytest.mark.browser


def test_approve_from_the_inbox_and_see_the_thread_finish(
    live: LiveServer, browser, tmp_path: Path
) -> None:
    thread = live.launch(message="ship v1.5.0 of the backend to production")
    assert thread["status"] == "awaiting_approval"
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.url + "/")
    page.fill("#key-input", live.keys["alice"])
    page.click("#key-form button")
    card = page.locator(f'article.approval[data-thread="{thread["id"]}"]')
    card.wait_for(timeout=UI_WAIT_MS)
    assert '"environment": "production"' in card.locator("pre.args").inner_text()
    assert "deploy_backend" in card.inner_text()
    shot = Path(os.environ.get("THREADLINE_UI_SCREENSHOT", tmp_path / "inbox.png"))
    page.screenshot(path=str(shot), full_page=True)

    card.get_by_role("button", name="Approve").click()
    page.locator("#thread-status .badge.done").wait_for(timeout=UI_WAIT_MS)
    # The status can refresh before the stream has drawn the last events: wait for them.
    page.locator("#timeline li", has_text="Deployed v1.5.0").first.wait_for(timeout=UI_WAIT_MS)
    timeline = page.locator("#timeline").inner_text()
    assert "approved" in timeline and "by alice" in timeline
    assert "Deployed v1.5.0 to production." in timeline
    # Each row is labelled as the server declares its kind, not by the page's own table.
    with live.client("admin") as c:
        kinds = c.get("/v1/event-kinds").json()["items"]
        labels = {k["kind"]: k["label"] for k in kinds}
        events = c.get(f"/v1/threads/{thread['id']}/events").json()["events"]
    page.locator("#timeline li").nth(len(events) - 1).wait_for(timeout=UI_WAIT_MS)
    shown = page.eval_on_selector_all(
        "#timeline li .kind", "els => els.map((e) => e.firstChild.textContent)"
    )
    assert shown == [labels[e["kind"]] for e in events]
    # ...and styled by the origin and role the server declares for it, never by its kind.
    traits = {k["kind"]: k for k in kinds}
    classes = page.eval_on_selector_all("#timeline li", "els => els.map((e) => e.className)")
    assert classes == [
        f"o-{traits[e['kind']]['origin']} r-{traits[e['kind']]['role']}"
        + (" error" if traits[e["kind"]]["error"] else "")
        for e in events
    ]
    # ...and each row says what the server's summary of the event says.
    bodies = page.eval_on_selector_all("#timeline li .body", "els => els.map((e) => e.textContent)")
    assert bodies == [e["summary"]["text"] + (e["summary"]["detail"] or "") for e in events]
    assert page.locator(f'article.approval[data-thread="{thread["id"]}"]').count() == 0
    # The key stays in this tab's session storage, never in local storage.
    assert page.evaluate("sessionStorage.getItem('threadline.key')") == live.keys["alice"]
    assert page.evaluate("localStorage.length") == 0
    assert errors == []
    assert live.wait_status(thread["id"], {"done"})["status"] == "done"
    if os.environ.get("THREADLINE_UI_SCREENSHOT"):
        page.screenshot(path=str(shot.with_name("timeline.png")), full_page=True)


def test_reject_with_a_comment_from_the_inbox(live: LiveServer, browser) -> None:
    thread = live.launch()
    page = browser.new_page()
    page.goto(live.url + "/ui/")
    page.fill("#key-input", live.keys["alice"])
    page.click("#key-form button")
    card = page.locator(f'article.approval[data-thread="{thread["id"]}"]')
    card.get_by_role("button", name="Reject…").click()
    card.locator("textarea").fill("not on a Friday")
    card.get_by_role("button", name="Reject with comment").click()
    page.locator("#thread-status .badge.done").wait_for(timeout=UI_WAIT_MS)
    assert "not on a Friday" in page.locator("#timeline").inner_text()
    done = live.wait_status(thread["id"], {"done"})
    assert done["result"] == "Deploy cancelled: not on a Friday"


def test_answer_a_question_from_the_inbox(live: LiveServer, browser) -> None:
    thread = live.launch("asker", "deploy something")
    assert thread["status"] == "awaiting_human"
    page = browser.new_page()
    page.goto(live.url + "/ui/")
    page.fill("#key-input", live.keys["alice"])
    page.click("#key-form button")
    card = page.locator(f'article.question[data-thread="{thread["id"]}"]')
    assert "Which environment?" in card.inner_text()
    card.locator("textarea").fill("staging")
    card.get_by_role("button", name="Send answer").click()
    page.locator("#thread-status .badge.done").wait_for(timeout=UI_WAIT_MS)
    assert "Thanks: staging" in page.locator("#timeline").inner_text()
    assert live.wait_status(thread["id"], {"done"})["result"] == "Thanks: staging"


def test_the_timeline_reconnects_after_a_restart_and_shows_what_it_missed(
    tmp_path: Path, deploybot: Agent, browser
) -> None:
    """The server stops (its stream ends cleanly), the thread is paused from elsewhere while
    it is down, and a new server starts on the same port and database: the page says it is
    reconnecting, then follows again and shows the pause and the new status without a
    reload. Before, a stream that ended cleanly was never reopened: the page stayed on the
    old status with no sign that it no longer followed the thread."""
    first = start_server(tmp_path, [deploybot], deploy_model(), keys=DEFAULT_KEYS)
    second = None
    try:
        thread = first.launch()
        assert thread["status"] == "awaiting_approval"
        page, errors = signed_in_page(first, browser)
        page.locator("#thread-status .badge.awaiting_approval").wait_for(timeout=UI_WAIT_MS)
        page.locator("#live.following").wait_for(timeout=UI_WAIT_MS)

        assert first.stop()
        page.locator("#live.reconnecting").wait_for(timeout=UI_WAIT_MS)
        assert "reconnecting" in page.locator("#live").inner_text()

        async def pause_elsewhere() -> None:
            async with SQLiteStore(first.db_path) as store:
                runtime = Runtime(store, agents=[deploybot], model=deploy_model())
                await runtime.pause(thread["id"], by="ops", reason="maintenance window")

        with ThreadPoolExecutor(1) as pool:  # Playwright's own loop runs on this thread
            pool.submit(asyncio.run, pause_elsewhere()).result()
        port = int(first.url.rsplit(":", 1)[1])
        second = start_server(tmp_path, [deploybot], deploy_model(), port=port)
        page.locator("#thread-status .badge.paused").wait_for(timeout=UI_WAIT_MS)
        page.locator("#live.following").wait_for(timeout=UI_WAIT_MS)
        page.locator("#timeline li", has_text="maintenance window").wait_for(timeout=UI_WAIT_MS)
        with second.client(None) as c:
            stored = c.get(
                f"/v1/threads/{thread['id']}/events",
                headers={"Authorization": f"Bearer {first.keys['admin']}"},
            ).json()["events"]
        shown = page.eval_on_selector_all("#timeline li", "els => els.map((e) => e.dataset.seq)")
        assert shown == [str(e["seq"]) for e in stored]  # each event once, in order
        assert errors == []
    finally:
        first.stop()
        if second is not None:
            second.stop()


class ClosingStreams:
    """An ASGI middleware that accepts every event stream and closes it at once (a broken
    server or proxy), after sending what `deliver` holds for that stream's number (1-based);
    everything else goes to the app. `opened` has the monotonic time of each stream."""

    def __init__(self) -> None:
        self.app: Any = None
        self.opened: list[float] = []
        self.deliver: dict[int, bytes] = {}

    def around(self, app: Any) -> ClosingStreams:
        self.app = app
        return self

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/events/stream"):
            await self.app(scope, receive, send)
            return
        self.opened.append(time.monotonic())
        body = b": connected\n\n" + self.deliver.pop(len(self.opened), b"")
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def test_the_timeline_backs_off_from_streams_that_close_at_once(
    tmp_path: Path, deploybot: Agent, browser
) -> None:
    """A server that accepts each stream and closes it at once: the page waits 1, 2, 4 s
    between attempts (it waited 1 s each time: opening a stream reset the wait, so such a
    server was asked again every second forever); a stream that delivers an event proves
    healthy and the wait starts from 1 s again."""
    streams = ClosingStreams()
    server = start_server(
        tmp_path, [deploybot], deploy_model(), keys=DEFAULT_KEYS, wrap=streams.around
    )
    try:
        thread = server.launch()
        page, errors = signed_in_page(server, browser)
        # Each text the header's stream badge shows, in order (the badge is replaced whole).
        page.evaluate("""() => {
            window.liveTexts = [];
            new MutationObserver(() => {
                const text = document.getElementById("live")?.textContent;
                if (text && window.liveTexts.at(-1) !== text) window.liveTexts.push(text);
            }).observe(document.body, { subtree: true, childList: true, characterData: true });
        }""")
        page.evaluate(f"location.hash = '#thread={thread['id']}'")
        page.locator("#live", has_text="reconnecting in 1 s").wait_for(timeout=UI_WAIT_MS)
        with server.client() as c:  # an event for the 4th stream to deliver (then close)
            assert c.post(f"/v1/threads/{thread['id']}/pause", json={}).status_code == 200
            paused = c.get(f"/v1/threads/{thread['id']}/events").json()["events"][-1]
        assert paused["kind"] == "paused"
        data = json.dumps(paused)
        streams.deliver[4] = f"id: {paused['seq']}\nevent: paused\ndata: {data}\n\n".encode()
        shown = page.locator(f'#timeline li[data-seq="{paused["seq"]}"]')
        shown.wait_for(timeout=UI_WAIT_MS)
        page.wait_for_function(
            "() => window.liveTexts.filter((t) => t.includes(' in ')).length >= 5",
            timeout=UI_WAIT_MS,
        )
        waits = [
            float(t.split(" in ")[1].split(" ")[0])
            for t in page.evaluate("window.liveTexts")
            if t.startswith("reconnecting in")
        ]
        assert waits[:5] == [1, 2, 4, 1, 2]
        # Each attempt came after the wait the page announced (a lower bound: a busy
        # machine only makes the gaps longer).
        gaps = [b - a for a, b in zip(streams.opened, streams.opened[1:], strict=False)]
        assert len(gaps) >= 4
        assert all(gap >= 0.9 * wait for gap, wait in zip(gaps, waits, strict=False))
        assert errors == []
    finally:
        server.stop()

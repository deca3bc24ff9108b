"""The inbox as a product, in headless Chromium against a real server: the first-visit
prompt, approval cards with the request and the agent's reason, editing arguments,
responding instead, the thread list's filters, search and pages, acting on a thread from
the page (recorded as channel `ui`), and narrow screens.

With THREADLINE_UI_SCREENSHOTS=DIR the tests save the screenshots of docs/channels.md there.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from server_support import DEFAULT_KEYS, UI_WAIT_MS, LiveServer, asker, start_server
from threadline import Agent
from threadline.events import RawToolCall, Status
from threadline.models.base import Context, ModelOutput
from threadline.testing import FunctionModel, intent

pytestmark = pytest.mark.browser

REASON = "v1.5.0 is the newest tag, and you asked for production."


def explaining_model() -> FunctionModel:
    """Deploybot's model, calling tools natively with a sentence of reasoning beside them."""

    def answer(context: Context) -> Any:
        text = "\n".join(m.content for m in context.messages)
        if "rejected" in text:
            return intent("done_for_now", message="Understood, not deploying.")
        if "release notes" in text:  # a message in place of a verdict
            return intent("done_for_now", message="I will wait for the release notes.")
        if "deployed to" in text:
            tag = "v1.4.1" if "v1.4.1 deployed" in text else "v1.5.0"
            return intent("done_for_now", message=f"Deployed {tag}.")
        call = RawToolCall(
            id="call_1",
            name="deploy_backend",
            arguments=json.dumps({"tag": "v1.5.0", "environment": "production"}),
        )
        return ModelOutput(text=REASON, tool_calls=(call,), model="explaining")

    return FunctionModel(answer, model_id="explaining")


@pytest.fixture
def served(tmp_path: Path, deploybot: Agent) -> Iterator[LiveServer]:
    server = start_server(tmp_path, [deploybot, asker()], explaining_model(), keys=DEFAULT_KEYS)
    yield server
    server.stop()


def shot(page: Any, name: str) -> None:
    folder = os.environ.get("THREADLINE_UI_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def open_inbox(
    server: LiveServer, browser: Any, key: str = "admin", **kw: Any
) -> tuple[Any, list[str]]:
    """The page with `key` entered, and the list its script errors are collected in."""
    page = browser.new_page(**({"viewport": {"width": 1280, "height": 860}} | kw))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.fill("#key-input", server.keys[key])
    page.click("#key-form button")
    page.locator("#welcome").wait_for(state="hidden")
    return page, errors


def events_of(server: LiveServer, thread_id: str) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body in server.stored_events(thread_id)]


def launch_asker(page: Any) -> str:
    """Launch the asker agent from the page's form; the id of the thread, asking its question."""
    page.click("#launch summary")
    page.select_option("#launch-agent", "asker")
    page.fill("#launch-message", "deploy something for me")
    page.click("#launch-form button")
    page.locator("#thread-status .badge.awaiting_human").wait_for(timeout=UI_WAIT_MS)
    return str(page.evaluate("location.hash").split("=", 1)[1])


def test_first_visit_asks_for_a_key_without_an_error(served: LiveServer, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 700})
    page.goto(served.url + "/")
    welcome = page.locator("#welcome")
    welcome.wait_for()
    assert "Enter an API key" in welcome.inner_text()
    assert page.locator("#main").is_hidden()
    assert page.locator("#notice").is_hidden()  # no red error on a first visit
    assert page.locator("#key-input").is_visible()
    assert page.locator("link[rel=icon]").get_attribute("href") == "favicon.svg"
    shot(page, "welcome.png")
    # A wrong key is an error, said as one.
    page.fill("#key-input", "tl_wrong")
    page.click("#key-form button")
    page.locator("#notice.error").wait_for()
    assert "refused" in page.locator("#notice").inner_text()
    icon = httpx.get(served.url + "/ui/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")
    assert httpx.get(served.url + "/favicon.ico").headers["location"] == "/ui/favicon.svg"


def test_an_approval_card_shows_the_request_and_reason_and_takes_edited_arguments(
    served: LiveServer, browser: Any
) -> None:
    thread = served.launch(message="please ship the latest backend to production")
    assert thread["status"] == "awaiting_approval", thread
    page, errors = open_inbox(served, browser, "alice")
    card = page.locator(f'article.approval[data-thread="{thread["id"]}"]')
    card.wait_for()
    assert "please ship the latest backend to production" in card.locator(".request").inner_text()
    assert REASON in card.locator(".reason").inner_text()
    shot(page, "inbox.png")

    card.get_by_role("button", name="Edit arguments…").click()
    editor = card.locator("textarea.args-editor")
    editor.fill("{not json")
    card.get_by_role("button", name="Approve with edits").click()
    page.locator("#notice.error").wait_for()
    assert "not valid JSON" in page.locator("#notice").inner_text()
    editor.fill(json.dumps({"tag": "v1.4.1", "environment": "production"}))
    card.get_by_role("button", name="Approve with edits").click()
    page.locator("#thread-status .badge.done").wait_for(timeout=UI_WAIT_MS)
    # The page reads the events, then the thread: a run that ends between the two reads
    # shows `done` first and its last events a moment later, from the live stream.
    page.locator("#timeline", has_text="Deployed v1.4.1.").wait_for(timeout=UI_WAIT_MS)
    approval = next(e for e in events_of(served, thread["id"]) if e["kind"] == "approval")
    assert approval["edited_arguments"] == {"tag": "v1.4.1", "environment": "production"}
    assert (approval["by"], approval["channel"]) == ("alice", "ui")
    assert errors == []


def test_respond_instead_sends_the_agent_a_message(served: LiveServer, browser: Any) -> None:
    thread = served.launch(message="deploy to production")
    page, errors = open_inbox(served, browser, "alice")
    card = page.locator(f'article.approval[data-thread="{thread["id"]}"]')
    card.get_by_role("button", name="Respond instead…").click()
    card.locator("textarea").fill("Wait for the release notes, then try staging first.")
    card.get_by_role("button", name="Send to the agent").click()
    page.locator("#thread-status .badge.done").wait_for(timeout=UI_WAIT_MS)
    events = events_of(served, thread["id"])
    assert "approval" not in [e["kind"] for e in events]  # no verdict
    instead = next(e for e in events if e["kind"] == "responded_instead")
    ran = [e for e in events if e.get("call_id") == instead["call_id"]]
    assert [e["kind"] for e in ran] == ["tool_call", "approval_requested", "responded_instead"]
    assert (instead["by"], instead["channel"]) == ("alice", "ui")
    assert instead["text"] == "Wait for the release notes, then try staging first."
    done = served.wait_status(thread["id"], {"done"})
    assert done["result"] == "I will wait for the release notes."
    assert "instead of a verdict" in page.locator("#timeline").inner_text()
    assert errors == []


def test_thread_list_filters_search_and_pages(served: LiveServer, browser: Any) -> None:
    with served.client("admin") as c:
        for n in range(22):
            r = c.post("/v1/threads", json={"agent": "asker", "message": f"question {n}"})
            assert r.status_code == 201
        special = c.post(
            "/v1/threads", json={"agent": "asker", "message": "the zebra migration"}
        ).json()
    deploy = served.launch(message="deploy to production")
    page, errors = open_inbox(served, browser)
    rows = page.locator("#recent li[data-open]")
    rows.first.wait_for()
    assert rows.count() == 20
    assert "ago" in rows.first.locator("time").inner_text()
    page.click("#page-older")
    page.locator("#page-label", has_text="page 2").wait_for()
    expect(rows).to_have_count(4)
    page.click("#page-newer")
    page.locator("#page-label", has_text="page 1").wait_for()

    page.select_option("#f-agent", "deploybot")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-open") == deploy["id"]
    page.select_option("#f-agent", "")
    statuses = page.locator("#f-status option")  # from the API's schema: every Status
    expect(statuses).to_have_count(len(Status) + 1)
    assert statuses.nth(2).text_content() == "awaiting approval"
    page.select_option("#f-status", "awaiting_approval")
    expect(rows).to_have_count(1)
    page.select_option("#f-status", "")
    expect(rows).to_have_count(20)
    page.fill("#f-q", "zebra")
    expect(rows.first).to_have_attribute("data-open", special["id"])
    expect(rows).to_have_count(1)
    page.fill("#f-q", deploy["id"][-10:])  # part of an id
    expect(rows.first).to_have_attribute("data-open", deploy["id"])
    expect(rows).to_have_count(1)
    page.fill("#f-q", "")
    page.select_option("#f-channel", "ui")
    page.wait_for_selector("#recent li.empty")  # nothing was launched from the page yet
    assert errors == []


def test_launch_message_pause_resume_and_fork_from_the_page(
    served: LiveServer, browser: Any
) -> None:
    page, errors = open_inbox(served, browser)
    thread_id = launch_asker(page)
    first = events_of(served, thread_id)[0]
    assert (first["channel"], first["sender"]) == ("ui", "admin")

    page.click("#thread-pause")
    page.locator("#thread-status .badge.paused").wait_for()
    page.click("#thread-resume")
    page.locator("#thread-status .badge.awaiting_human").wait_for()
    page.fill("#thread-message", "staging")
    page.click("#thread-send")
    page.locator("#thread-status .badge.done").wait_for(timeout=UI_WAIT_MS)
    kinds = [e["kind"] for e in events_of(served, thread_id)]
    assert "paused" in kinds and "resumed" in kinds
    answer = next(e for e in events_of(served, thread_id) if e["kind"] == "human_response")
    assert (answer["text"], answer["channel"], answer["by"]) == ("staging", "ui", "admin")
    shot(page, "thread.png")

    page.fill("#fork-at", "0")
    page.click("#thread-fork")
    expect(page).not_to_have_url(re.compile(re.escape(thread_id) + "$"))
    forked = page.evaluate("location.hash").split("=", 1)[1]
    assert events_of(served, forked)[0]["text"] == "deploy something for me"
    page.select_option("#f-channel", "ui")
    page.wait_for_selector(f'#recent li[data-open="{thread_id}"]')
    assert errors == []


def test_what_is_typed_survives_the_thread_being_paused_and_resumed_elsewhere(
    served: LiveServer, browser: Any
) -> None:
    page, errors = open_inbox(served, browser)
    thread_id = launch_asker(page)
    page.fill("#thread-message", "staging, once the notes are out")
    # Someone else pauses and resumes it: the page re-renders the thread twice from its
    # live stream, the second time without a message box (a paused thread takes none).
    auth = {"Authorization": f"Bearer {served.keys['admin']}"}
    for action, status in (("pause", "paused"), ("resume", "awaiting_human")):
        httpx.post(f"{served.url}/v1/threads/{thread_id}/{action}", headers=auth).raise_for_status()
        page.locator(f"#thread-status .badge.{status}").wait_for(timeout=UI_WAIT_MS)
    assert page.locator("#thread-message").input_value() == "staging, once the notes are out"
    page.click("#thread-send")
    page.locator("#thread-status .badge.done").wait_for(timeout=UI_WAIT_MS)
    answer = next(e for e in events_of(served, thread_id) if e["kind"] == "human_response")
    assert answer["text"] == "staging, once the notes are out"
    # Sent: the draft is gone once the page has the answer to its POST, which can come after
    # the stream has shown the thread done (a loaded page): waited for, not read at once.
    expect(page.locator("#thread-message")).to_have_value("", timeout=UI_WAIT_MS)
    assert errors == []


def test_narrow_screens_get_one_column_without_sideways_scrolling(
    served: LiveServer, browser: Any
) -> None:
    thread = served.launch(message="deploy to production")
    page, errors = open_inbox(served, browser, "alice", viewport={"width": 390, "height": 844})
    page.locator(f'article.approval[data-thread="{thread["id"]}"]').wait_for()
    page.locator("#timeline li").first.wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    inbox = page.locator("#inbox").bounding_box()
    timeline = page.locator("#thread").bounding_box()
    assert inbox and timeline and timeline["y"] > inbox["y"]  # stacked, not side by side
    shot(page, "narrow.png")
    assert errors == []


def test_the_thread_opened_last_is_shown_when_an_earlier_one_loads_after_it(
    served: LiveServer, browser: Any
) -> None:
    """Opening a thread while another is still loading: the later choice is shown, and only
    its stream followed, however the two loads finish. Here the first thread's events are
    held back (at the page's network layer; the server is real) until the second is shown."""
    first = served.launch(message="deploy to production")
    with served.client() as c:
        second = c.post(
            "/v1/threads", json={"agent": "asker", "message": "deploy something", "wait": True}
        ).json()
    page, errors = open_inbox(served, browser)
    page.locator("#timeline li").first.wait_for()
    held: list[Any] = []
    page.route(f"**/v1/threads/{first['id']}/events?limit=*", lambda route: held.append(route))
    page.evaluate(f"location.hash = '#thread={first['id']}'")
    while not held:
        page.wait_for_timeout(20)
    page.evaluate(f"location.hash = '#thread={second['id']}'")
    expect(page.locator("#thread header code")).to_have_text(second["id"])
    expect(page.locator("#thread-status .badge.awaiting_human")).to_be_visible()
    route = held[0]
    route.fulfill(response=route.fetch())  # the first load goes on, and ends last
    thread_url = f"/v1/threads/{first['id']}"
    page.wait_for_function(
        "url => performance.getEntriesByType('resource').some("
        "e => e.name.endsWith(url) && e.responseEnd > 0)",
        arg=thread_url,
        timeout=UI_WAIT_MS,
    )
    page.evaluate("new Promise((done) => setTimeout(done, 200))")  # its continuation ran
    assert page.locator("#thread header code").inner_text() == second["id"]
    shown = page.locator("#timeline li").count()
    assert shown == len(events_of(served, second["id"]))
    assert errors == []


def test_a_status_read_that_answers_late_does_not_undo_a_newer_one(
    served: LiveServer, browser: Any
) -> None:
    """The live stream re-reads the thread after each event; those reads can answer out of
    order (a loaded server, another connection). Here the read that followed a pause is
    held at the page's network layer (answered by the server at once, delivered late) until
    the thread has been resumed and the page shows it so: the late answer, older than what
    is shown, must not turn the page back to `paused` for good (no event follows to fix it)."""
    page, errors = open_inbox(served, browser)
    thread_id = launch_asker(page)
    held: list[Any] = []

    def hold_the_first(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    thread_url = f"**/v1/threads/{thread_id}"
    page.route(thread_url, hold_the_first)
    auth = {"Authorization": f"Bearer {served.keys['admin']}"}
    httpx.post(f"{served.url}/v1/threads/{thread_id}/pause", headers=auth).raise_for_status()
    while not held:  # the page's read after the `paused` event
        page.wait_for_timeout(20)
    stale = held[0].fetch()  # answered now: paused
    resumed = httpx.post(f"{served.url}/v1/threads/{thread_id}/resume", headers=auth)
    last = resumed.raise_for_status().json()["next_seq"] - 1
    # The page read the thread after the `resumed` event: its fork box ends at that event.
    page.locator(f'#fork-at[max="{last}"]').wait_for(timeout=UI_WAIT_MS)
    expect(page.locator("#thread-status .badge.awaiting_human")).to_be_visible()
    reads = (
        "n => performance.getEntriesByType('resource').filter("
        "e => e.name.endsWith(`/v1/threads/${n}`) && e.responseEnd > 0).length"
    )
    before = page.evaluate(reads, thread_id)
    held[0].fulfill(response=stale)  # the old answer arrives last
    page.wait_for_function(f"n => ({reads})(n) > {before}", arg=thread_id, timeout=UI_WAIT_MS)
    page.evaluate("new Promise((done) => setTimeout(done, 200))")  # its continuation ran
    expect(page.locator("#thread-status .badge.awaiting_human")).to_be_visible()
    assert page.locator("#thread-status .badge.paused").count() == 0
    assert page.locator("#thread-message").is_visible()  # it can be answered
    assert errors == []

"""End to end in Chromium: moments (issue 6). Several browser contexts (people) on one
session: one travels back while another stays live and sees nothing move; a link to a
moment opens exactly there in a third (state hash compared); a decision from the past
keeps both branches; a revoked link's socket closes and its page says so; presence and
follow mode between two contexts."""

from __future__ import annotations

import json
import re

import pytest
from e2ehelpers import (
    LOST,
    V46_RACE,
    last_leaf_addr,
    open_example,
    position,
    require_playwright,
    row,
    shot,
    step_keys,
    wait_live,
    wait_position,
)

expect = require_playwright()
pytestmark = pytest.mark.e2e


def store(page, expr: str):
    return page.evaluate(f"() => window.ptviz.store.{expr}")


def view_url(page, server) -> str:
    return f"{server.url}/s/{store(page, 'boot.share')}/"


def second_person(a, server, browsing):
    """Another person (a browser context of their own) opening a's view link, live."""
    b = browsing.page(browsing.context())
    b.goto(view_url(a, server))
    wait_live(b)
    return b


def where(page):
    return page.locator(".moment-bar .where")


def test_one_travels_back_the_other_stays_live_and_a_link_opens_there(server, browsing):
    a = browsing.page()
    open_example(a, server, V46_RACE)
    step_keys(a, LOST)
    b = second_person(a, server, browsing)
    leaf = last_leaf_addr(b)
    expect(where(b)).to_contain_text("live")

    # b travels back four decisions; a sees nothing move.
    b.locator(".tree-vp").click()
    for _ in range(4):
        b.keyboard.press("b")
    wait_position(b, len(LOST) - 4)
    expect(where(b)).to_contain_text(f"step {len(LOST) - 4} of {len(LOST)}")
    expect(where(b)).to_contain_text(f"live at {len(LOST)}")
    assert position(a) == len(LOST)
    expect(where(a)).to_contain_text("live")
    before = row(b, leaf).locator(".c-raw").inner_text()
    shot(b, "moments-1-viewer-in-the-past")

    # a goes on at the head (an injected operation, stepped): b's view does not move,
    # it only learns where the head is.
    a.evaluate('() => window.ptviz.actions.inject("vcpu0", "read 0x8000_0000")')
    wait_position(a, len(LOST) + 1)
    a.keyboard.press("1")
    wait_position(a, len(LOST) + 2)
    expect(where(b)).to_contain_text(f"live at {len(LOST) + 2}")
    assert position(b) == len(LOST) - 4
    assert row(b, leaf).locator(".c-raw").inner_text() == before
    later = b.locator(".tl-lanes .ev.later")
    assert later.count() >= 4, "the events after b's moment stay visible, greyed"
    shot(a, "moments-2-controller-live")
    shot(b, "moments-3-viewer-still-in-the-past")

    # b copies a link to its moment; a third person opens it, exactly there.
    b.locator(".moment-bar").get_by_role("button", name="copy link to this moment").click()
    notice = b.locator(".notice", has_text="/s/")
    expect(notice).to_have_count(1)
    url = re.search(r"https?://\S+", notice.inner_text())[0]
    assert f"at={len(LOST) - 4}" in url and "&h=" in url
    c = browsing.page(browsing.context())
    c.goto(url)
    wait_live(c)
    wait_position(c, len(LOST) - 4)
    assert store(c, "hash") == store(b, "hash")
    assert store(c, "past") and not store(a, "past")
    shot(c, "moments-4-link-opens-there")

    # clicking a timeline event moves only the clicker: right after that event
    first = c.locator(".tl-lanes .ev").first
    seq = int(first.get_attribute("data-seq"))
    first.click()
    wait_position(c, seq + 1)
    assert position(b) == len(LOST) - 4 and position(a) == len(LOST) + 2
    # back to live
    c.locator(".moment-bar").get_by_role("button", name="back to live").click()
    wait_position(c, len(LOST) + 2)
    expect(where(c)).to_contain_text("live")

    # a link naming no moment of the session says so
    c.goto(view_url(a, server) + "?at=b7-3")
    wait_live(c)
    expect(c.locator(".notice", has_text="no branch 7")).to_have_count(1)


def test_a_decision_from_the_past_keeps_both_branches(server, browsing):
    a = browsing.page()
    open_example(a, server, V46_RACE)
    step_keys(a, LOST)
    tip = store(a, "hash") or a.evaluate(
        "() => window.ptviz.conn.command('moment').then(() => null)"
    )
    a.locator(".tree-vp").click()
    for _ in range(3):
        a.keyboard.press("b")
    wait_position(a, 7)
    a.keyboard.press("1")  # vcpu0, from the past: where?
    choice = a.locator(".notice", has_text="not the head")
    expect(choice).to_have_count(1)
    shot(a, "moments-5-decision-from-the-past")
    choice.get_by_role("button", name="continue here on a new branch").click()
    wait_position(a, 8)
    expect(where(a)).to_contain_text("branch 1, step 8")
    expect(where(a)).to_contain_text("live")
    shot(a, "moments-6-new-branch")
    # both branches are reachable
    a.evaluate('() => window.ptviz.actions.seekMoment("10")')
    wait_position(a, 10)
    expect(where(a)).to_contain_text("the head is at branch 1, step 8")
    if tip:
        assert store(a, "hash") == tip
    expect(a.locator(".panel.violations")).to_contain_text("no_lost_update")
    a.evaluate('() => window.ptviz.actions.seekMoment("b1-8")')
    wait_position(a, 8)
    expect(where(a)).to_contain_text("live")


def test_a_revoked_links_socket_closes_and_its_page_says_so(server, browsing):
    a = browsing.page()
    open_example(a, server, V46_RACE)
    made = a.evaluate(
        """async () => {
          const b = window.ptviz.store.boot;
          const r = await fetch(`/sessions/${b.session}/links`, {method: "POST",
            headers: {"Content-Type": "application/json", "X-CSRFToken": b.csrf},
            body: JSON.stringify({token: b.token, role: "view", label: "for bob",
                                  expires_in: 3600})});
          return r.json();
        }"""
    )
    assert made["label"] == "for bob"
    b = browsing.page(browsing.context())
    b.goto(made["url"])
    wait_live(b)
    expect(a.locator(".presence-list li")).to_have_count(2)
    expect(a.locator(".presence-list")).to_contain_text("for bob")
    status = a.evaluate(
        """async (token) => {
          const b = window.ptviz.store.boot;
          const r = await fetch(`/sessions/${b.session}/links/${token}/revoke`, {method: "POST",
            headers: {"Content-Type": "application/json", "X-CSRFToken": b.csrf},
            body: JSON.stringify({token: b.token})});
          return r.status;
        }""",
        made["token"],
    )
    assert status == 200
    expect(b.locator(".toolbar .conn")).not_to_have_class(re.compile(r"\bc-live\b"), timeout=2000)
    expect(b.locator(".notice", has_text="revoked")).to_have_count(1)
    expect(a.locator(".presence-list li")).to_have_count(1)
    shot(b, "moments-7-revoked-socket")
    b.reload()
    expect(b.locator("h1")).to_have_text("Link revoked")
    expect(b.locator("body")).to_contain_text("revoked this share link")
    shot(b, "moments-8-revoked-page")


def test_presence_and_follow_mode(server, browsing):
    a = browsing.page()
    open_example(a, server, V46_RACE)
    step_keys(a, LOST[:6])
    a.locator(".presence .name-in").fill("alice")
    a.locator(".presence .name-in").press("Enter")
    b = second_person(a, server, browsing)
    b.locator(".presence .name-in").fill("bob")
    b.locator(".presence .name-in").press("Enter")
    expect(a.locator(".presence-list")).to_contain_text("bob")
    expect(b.locator(".presence-list")).to_contain_text("alice")
    expect(a.locator(".presence-list li", has_text="bob")).to_contain_text("view")
    # bob follows alice: her moment and her selection become his
    b.locator(".presence-list li", has_text="alice").get_by_role("button", name="follow").click()
    expect(a.locator(".presence-list li", has_text="bob")).to_contain_text("following alice")
    a.locator(".tree-vp").click()
    a.keyboard.press("b")
    a.keyboard.press("b")
    wait_position(a, 4)
    wait_position(b, 4)
    expect(b.locator(".presence-list li:not(.you)")).to_contain_text("step 4")
    leaf = last_leaf_addr(a)
    row(a, leaf).click()
    expect(row(b, leaf)).to_have_class(re.compile(r"\bsel\b"))
    shot(b, "moments-9-follow")
    # his own action ends following
    b.locator(".tree-vp").click()
    b.keyboard.press("End")
    expect(where(b)).to_contain_text("live")
    expect(
        b.locator(".presence-list li", has_text="alice").get_by_role("button", name="follow")
    ).to_have_count(1)
    assert position(a) == 4


def test_a_reconnect_and_a_reload_reopen_where_the_viewer_is_not_where_the_link_was(
    server, browsing
):
    a = browsing.page()
    open_example(a, server, V46_RACE)
    step_keys(a, LOST)
    b = second_person(a, server, browsing)
    b.locator(".tree-vp").click()
    for _ in range(3):
        b.keyboard.press("b")
    back = len(LOST) - 3
    wait_position(b, back)
    assert f"at={back}" in b.url, "the address bar names the viewer's moment"

    # the socket drops (a server restart, a network change): it comes back at the cursor
    b.evaluate("() => window.ptviz.conn.ws.close()")
    expect(b.locator(".toolbar .conn")).not_to_have_class(re.compile(r"\bc-live\b"))
    wait_live(b)
    wait_position(b, back)
    expect(where(b)).to_contain_text(f"step {back} of {len(LOST)}")

    b.reload()
    wait_live(b)
    wait_position(b, back)

    # back to live: the address bar and the next reconnect follow the head again
    b.keyboard.press("End")
    wait_position(b, len(LOST))
    expect(where(b)).to_contain_text("live")
    assert "at=" not in b.url
    b.evaluate("() => window.ptviz.conn.ws.close()")
    expect(b.locator(".toolbar .conn")).not_to_have_class(re.compile(r"\bc-live\b"))
    wait_live(b)
    expect(where(b)).to_contain_text("live")
    shot(b, "moments-9-reconnected-live")


WP_4096 = """name = "wp over 4,096 4K leaves"
kernel = "seed"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
count = 4096
af = true
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 16M"]
"""


def first_leaf(text: str) -> tuple[str, list[str]]:
    """The descriptor of the scenario's first leaf and the tables down to it (the engine's
    own layout: the start-level table's first table entry, and so on down)."""
    from engine.session import LiveSession

    live = LiveSession(text)
    pa, level = 0x10_0000_0000, live.spec.geometry.start_level
    tables = []
    while True:
        tables.append(hex(pa))
        rows = live.table_view(pa, level)["rows"]
        r = next(r for r in rows if r["decoded"]["type"] != "invalid")
        if r["decoded"]["type"] != "table":
            return r["addr"], tables
        pa, level = int(r["decoded"]["next_table"], 16), level + 1


def test_a_link_to_a_leaf_opens_its_level_3_table_from_the_snapshot(server, browsing):
    """A session too big to open fully (4,096 leaves), no event yet: a link with `d` (a
    leaf descriptor) opens the tree down to its level-3 table and selects it, with the
    tables in the viewer's own snapshot: the page asks for none."""
    a = browsing.page()
    a.goto(server.url + "/")
    a.locator("details#paste > summary").click()
    a.locator('textarea[name="scenario"]').fill(WP_4096)
    a.locator("details#paste").get_by_role("button", name="Create session").click()
    a.wait_for_url(re.compile(r"/s/[^/]+/"))
    wait_live(a)
    leaf, tables = first_leaf(WP_4096)
    assert len(tables) == 3  # the start level (1), 2 and 3
    assert row(a, leaf).count() == 0  # (collapsed: only the start level is open)

    b = browsing.page()
    sent: list[dict] = []
    b.on("websocket", lambda ws: ws.on("framesent", lambda f: sent.append(json.loads(f))))
    b.goto(view_url(a, server) + f"?d={leaf}")
    wait_live(b)
    leaf_row = row(b, leaf)
    expect(leaf_row).to_have_class(re.compile(r"\bsel\b"))
    expect(leaf_row).to_be_in_viewport()
    expect(leaf_row.locator(".c-lvl")).to_have_text("L3")
    expect(leaf_row.locator(".f-type")).to_have_text("page")
    assert sorted(b.evaluate("() => [...window.ptviz.store.expanded]")) == sorted(tables[1:])
    subscribes = [m for m in sent if m.get("cmd") == "subscribe"]
    assert subscribes == [], subscribes
    shot(b, "moments-link-to-a-leaf")

    # it stays live: the wp passes the leaf, whose row then shows it read-only
    expect(leaf_row.locator(".f-s2ap")).to_have_text("rw")
    a.evaluate("() => window.ptviz.conn.command('run', {speed: 0})")
    expect(leaf_row.locator(".f-s2ap")).to_have_text("ro")

"""End to end in Chromium: moments (issue 6). Several browser contexts (people) on one
session: one travels back while another stays live and sees nothing move; a link to a
moment opens exactly there in a third (state hash compared); a decision from the past
keeps both branches; a revoked link's socket closes and its page says so; presence and
follow mode between two contexts."""

from __future__ import annotations

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


def where(page):
    return page.locator(".moment-bar .where")


def test_one_travels_back_the_other_stays_live_and_a_link_opens_there(server, browsing):
    a = browsing.page()
    open_example(a, server, V46_RACE)
    step_keys(a, LOST)
    b = browsing.page(browsing.context())
    b.goto(view_url(a, server))
    wait_live(b)
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
    b = browsing.page(browsing.context())
    b.goto(view_url(a, server))
    wait_live(b)
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
    b = browsing.page(browsing.context())
    b.goto(view_url(a, server))
    wait_live(b)
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

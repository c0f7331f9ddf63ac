"""End to end in Chromium: two browser contexts (two profiles, as two people) on one
debug session, one through its control link and one through a view link made with the
page's share menu. Steps taken in the control context reach both as the same delta
batches (the same events, the same descriptor value); the view context cannot step:
its controls are disabled, its keys are refused in the page, and a step command sent
over its websocket anyway is refused by the server (`forbidden`).
"""

from __future__ import annotations

import json
import re

import pytest
from e2ehelpers import (
    LOST,
    V46_RACE,
    last_leaf_addr,
    leaf_cells,
    open_example,
    position,
    require_playwright,
    row,
    shot,
    step_keys,
    timeline,
    wait_live,
    wait_position,
)

expect = require_playwright()
pytestmark = pytest.mark.e2e


def record_frames(page) -> list[dict]:
    """Every message the page's websockets receive, decoded."""
    frames: list[dict] = []

    def on_ws(ws):
        def got(payload):
            if isinstance(payload, bytes | bytearray):
                payload = payload.decode()
            frames.append(json.loads(payload))

        ws.on("framereceived", got)

    page.on("websocket", on_ws)
    return frames


def deltas_with_events(frames: list[dict]) -> list[tuple]:
    return [
        (
            m["batch"],
            m["position"],
            [(e["seq"], e["actor"], e["kind"], e.get("new")) for e in m["events"]],
        )
        for m in frames
        if m.get("type") == "delta" and m.get("events")
    ]


def test_control_and_view_contexts_see_the_same_deltas(server, browsing):
    control = browsing.page()
    control_frames = record_frames(control)
    open_example(control, server, V46_RACE)

    # a view link from the share menu
    share = control.locator("details.menu", has=control.locator("summary", has_text="share"))
    share.locator("summary").click()
    share.get_by_role("button", name="Create a read-only link to this session").click()
    field = share.locator("input.link-field")
    expect(field).to_have_count(1)
    expect(field).to_be_in_viewport(ratio=1)
    view_url = field.input_value()
    assert re.search(r"/s/[^/]+/$", view_url) and view_url != control.url
    control.keyboard.press("Escape")  # closes the menu

    view = browsing.page(browsing.context())  # another profile: no shared cookies
    view_frames = record_frames(view)
    view.goto(view_url)
    wait_live(view)
    expect(view.locator(".role-tag")).to_have_text("view only")
    hello = next(m for m in view_frames if m.get("type") == "hello")
    assert hello["role"] == "view" and hello["session"] == control.evaluate(
        "() => window.ptviz.store.sessionId"
    )

    # the view context cannot take decisions
    for sel in (
        ".step-btns button[data-actor]",
        ".actors button.step-btn",
        '.toolbar button[aria-label="Run"]',
        '.toolbar button[aria-label="Explore every interleaving"]',
        ".inject-form button[type=submit]",
    ):
        buttons = view.locator(sel)
        assert buttons.count() > 0, sel
        for k in range(buttons.count()):
            expect(buttons.nth(k)).to_be_disabled()
    view.locator(".tree-vp").click()  # focus the page, then try the step key anyway
    view.keyboard.press("Escape")
    view.keyboard.press("1")
    notice = view.locator(".notice.n-error", has=view.locator("code", has_text="forbidden"))
    expect(notice).to_contain_text("view-only link")
    # ... and the server refuses a step sent over the view's websocket all the same
    code = view.evaluate(
        """() => window.ptviz.conn.command("step", {actor: "vcpu0"})
                   .then(() => "ack", (err) => err.code)"""
    )
    assert code == "forbidden"
    refused = [m for m in view_frames if m.get("type") == "error"]
    assert refused and refused[-1]["code"] == "forbidden"
    assert "control link" in refused[-1]["message"]
    assert position(view) == 0 and position(control) == 0
    shot(view, "sharing-1-view-forbidden")

    # steps from the control context reach both, the same
    leaf = last_leaf_addr(control)
    assert leaf == last_leaf_addr(view)

    def both_agree(n, _name):
        wait_position(view, n)
        seq = control.locator(".pos-text").inner_text()
        expect(view.locator(".pos-text")).to_have_text(seq)
        assert timeline(view) == timeline(control)
        expect(row(view, leaf).locator(".c-raw")).to_have_text(
            row(control, leaf).locator(".c-raw").inner_text()
        )

    step_keys(control, LOST, after=both_agree)

    got_control = deltas_with_events(control_frames)
    got_view = deltas_with_events(view_frames)
    assert len(got_control) == len(LOST)
    assert got_view == got_control
    batches = [b for b, _, _ in got_control]
    assert batches == list(range(batches[0], batches[0] + len(batches)))  # consecutive
    kinds = [e[2] for _, _, events in got_view for e in events]
    assert kinds.count("hw-update") == 1 and kinds.count("store") == 1
    # the last write is the plain store that put AF=0 back: the same value in both
    cells = leaf_cells(view, leaf)
    assert cells == leaf_cells(control, leaf)
    assert (cells["s2ap"], cells["af"]) == ("ro", "0")
    assert cells["raw"].endswith("4000037f")
    for page in (control, view):
        expect(page.locator(".panel.violations")).to_contain_text("no_lost_update")
        expect(row(page, leaf).locator(".lost-tag")).to_have_text("lost AF")
    # a view link cannot make control links
    expect(view.locator(".menu-body button", has_text="control link")).to_be_disabled()
    shot(control, "sharing-2-control-after-steps")
    shot(view, "sharing-3-view-after-steps")

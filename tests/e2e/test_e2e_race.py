"""End to end in Chromium: the seed race stepped from the keyboard and the toolbar, the
same race compared with v4.6 (the lost update), and exploring every interleaving from the
UI down to a counterexample stepped through to its lost bits.

Every wait is on a DOM state the websocket messages produce (the toolbar's position, a
timeline box, a table row, a panel), never a sleep.
"""

from __future__ import annotations

import re

import pytest
from e2ehelpers import (
    LOST,
    SEED_RACE,
    STXR_FAIL,
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


def host_events(events: list[dict], actor: str) -> list[dict]:
    return [e for e in events if e["op"].startswith(actor + ":")]


def test_seed_race_stxr_fails_and_the_retry_keeps_af(server, page):
    open_example(page, server, SEED_RACE)
    expect(page.locator(".ptviz-head .kernel-tag")).to_have_text("seed")
    expect(page.locator(".role-tag")).to_have_text("control")
    leaf = last_leaf_addr(page)
    assert leaf, "the leaf's level-3 table did not open"
    start = leaf_cells(page, leaf)
    assert (start["type"], start["s2ap"], start["af"]) == ("page", "rw", "0")
    shot(page, "race-1-seed-opened")

    # host0 takes the lock, walks and LDXRs the leaf (keys), vcpu0's walk and hardware AF
    # update (the actor card's step button), then host0's STXR (the toolbar's step button)
    step_keys(page, STXR_FAIL[:4])
    ldxr = timeline(page)[-1]
    assert ldxr["label"] == "ldxr" and ldxr["op"].startswith("host0:")
    for n in range(5, 9):
        page.locator(".actors article.actor", has_text="vcpu0").locator("button.step-btn").click()
        wait_position(page, n)
    hw = timeline(page)[-1]
    assert hw["label"] == "hw" and "k-hw" in hw["cls"]
    assert leaf_cells(page, leaf)["af"] == "1"  # the walker set AF under host0's LDXR
    page.locator('.step-btns button[data-actor="host0"]').click()
    wait_position(page, 9)

    # The STXR failed: its timeline box is marked, the descriptor row names it, AF is 1
    fail = page.locator(".tl-lanes .ev.fail")
    expect(fail).to_have_count(1)
    expect(fail).to_contain_text("stxr✗")
    expect(fail).to_have_attribute("title", re.compile(r"host0 .*stxr-fail"))
    expect(page.locator(".tl-info")).to_contain_text("1 failed exclusive")
    expect(row(page, leaf).locator(".fail-tag")).to_contain_text("host0")
    expect(row(page, leaf).locator(".fail-tag")).to_contain_text("stxr-fail")
    assert leaf_cells(page, leaf)["af"] == "1"
    shot(page, "race-2-seed-stxr-failed")

    # The loop retries: LDXR reloads (AF=1), STXR succeeds, unlock
    step_keys(page, STXR_FAIL[9:])
    events = timeline(page)
    host = [e["label"] for e in host_events(events, "host0")]
    assert host == ["lock", "ld", "ld", "ldxr", "stxr✗", "ldxr", "stxr", "unlk"], host
    stxr_ok = [e for e in events if e["label"] == "stxr"][0]
    assert "k-write" in stxr_ok["cls"] and "fail" not in stxr_ok["cls"]
    assert "0x400007ff → 0x4000077f" in stxr_ok["title"]  # AF kept, S2AP now ro
    end = leaf_cells(page, leaf)
    assert (end["s2ap"], end["af"]) == ("ro", "1"), end
    assert end["raw"].endswith("4000077f")
    assert "host0" in end["who"] and "stxr-ok" in end["who"]
    expect(page.locator(".panel.violations")).to_be_hidden()
    expect(page.locator(".actors article.actor.st-done")).to_have_count(2)
    assert position(page) == len(STXR_FAIL)
    # the root counters: one leaf, young, read-only
    expect(page.locator(".panel.machine .root-counts")).to_contain_text("1 young")
    expect(page.locator(".panel.machine .root-counts")).to_contain_text("1 ro")
    shot(page, "race-3-seed-retry-af-kept")


def test_compare_with_v46_flags_the_lost_update(server, page):
    open_example(page, server, SEED_RACE)
    compare = page.locator("details.menu", has=page.locator("summary", has_text="compare"))
    compare.locator("summary").click()
    body = compare.locator(".menu-body")
    expect(body).to_be_visible()
    # The menu offers the other generation with this machine's flags (HA on, HAFDBS 1)
    expect(body.get_by_label("Kernel generation")).to_have_value("v4.6")
    expect(body.locator('label[title="VTCR_EL2.HA"] input')).to_be_checked()
    # the whole menu is on screen (the toolbar wraps at this width: the menu opens
    # under a summary at the start of the second row)
    for control in (
        body.get_by_label("Kernel generation"),
        body.locator('label[title="VTCR_EL2.HA"]'),
    ):
        expect(control).to_be_in_viewport(ratio=1)
    box = body.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"], box
    shot(page, "compare-1-menu")
    before = page.url
    body.locator("button", has_text="open here").click()
    page.wait_for_url(lambda url: url != before and "/s/" in url)
    wait_live(page)
    expect(page.locator(".ptviz-head .kernel-tag")).to_have_text("v4.6")
    expect(page.locator(".panel.machine")).to_contain_text("HA on with pre-seed code")
    leaf = last_leaf_addr(page)

    step_keys(page, LOST)
    violations = page.locator(".panel.violations")
    expect(violations).to_be_visible()
    expect(violations).to_contain_text("no_lost_update")
    expect(violations.locator(".lostbits")).to_have_text("AF")
    expect(violations).to_contain_text("by host0")
    r = row(page, leaf)
    expect(r).to_have_class(re.compile(r"\bhas-lost\b"))
    expect(r.locator(".lost-tag")).to_have_text("lost AF")
    expect(r.locator(".f-af")).to_have_class(re.compile(r"\blost\b"))
    cells = leaf_cells(page, leaf)
    assert (cells["s2ap"], cells["af"]) == ("ro", "0"), cells
    store = [e for e in timeline(page) if e["label"].startswith("st")]
    assert len(store) == 1 and "bad" in store[0]["cls"] and "lost-update" in store[0]["title"]
    expect(page.locator(".tl-info")).to_contain_text("1 lost-update")
    shot(page, "compare-2-v46-lost-af")

    # The violation's entry selects its event and reveals the descriptor
    violations.locator("button.link").first.click()
    expect(page.locator(".tl-lanes .ev.sel")).to_have_count(1)
    expect(page.locator(".tl-detail")).to_contain_text("lost-update")


def test_explore_from_the_ui_then_step_a_counterexample(server, page):
    open_example(page, server, V46_RACE)
    page.keyboard.press("e")  # explore every interleaving
    panel = page.locator(".panel.explore")
    expect(panel.locator(".explore-progress")).to_be_visible()
    expect(panel.locator(".row > span.small")).to_have_text("done")
    summary = panel.locator(".summary")
    expect(summary).to_contain_text("245 interleavings")
    expect(summary).to_contain_text("42 states")
    expect(summary).to_contain_text("expectations")
    # final states with their counts (they add up to every interleaving)
    finals = panel.locator("table.finals tbody tr")
    expect(finals).to_have_count(2)
    counts = [int(c.replace(",", "")) for c in finals.locator("td.num").all_inner_texts()]
    assert sum(counts) == 245 and all(c > 0 for c in counts), counts
    leaves = " ".join(finals.locator("td:nth-child(2)").all_inner_texts())
    assert "af=0" in leaves and "af=1" in leaves
    cex = panel.locator("ul.cex li")
    expect(cex).to_have_count(1)
    expect(cex).to_contain_text("no_lost_update")
    expect(cex.locator(".lostbits")).to_have_text("AF")
    shot(page, "explore-1-result")

    before = page.url
    cex.get_by_role("button", name=re.compile("open counterexample")).click()
    page.wait_for_url(lambda url: url != before and "at=0" in url)
    wait_live(page)
    decisions = page.evaluate("() => window.ptviz.store.decisions")
    assert decisions > 0 and position(page) == 0
    expect(page.locator(".moment-bar.past")).to_be_visible()
    leaf = last_leaf_addr(page)
    # forward through the recorded counterexample (f, then →): the violation shows up at
    # the decision whose event is host0's plain store flagged lost-update
    violations = page.locator(".panel.violations")
    appeared = None
    for n in range(1, decisions + 1):
        page.keyboard.press("f" if n % 2 else "ArrowRight")
        wait_position(page, n)
        if appeared is None and violations.is_visible():
            appeared = n
            last = timeline(page)[-1]
            assert last["label"] == "st" and "bad" in last["cls"], last
            assert "lost-update" in last["title"]
            shot(page, "explore-2-counterexample-lost")
    assert appeared is not None and appeared > 1
    expect(page.locator(".moment-bar.past")).to_be_hidden()
    expect(violations).to_contain_text("no_lost_update")
    r = row(page, leaf)
    expect(r.locator(".lost-tag")).to_have_text("lost AF")
    expect(r.locator(".f-af.lost")).to_have_text("0")
    shot(page, "explore-3-counterexample-end")


PROGRESS_SCENARIO = """\
name = "explore progress: three vCPUs and a host over four pages"
kernel = "seed"
[machine]
hafdbs = 1
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
count = 4
af = false
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000", "write 0x8000_1000"]
[[actor]]
name = "vcpu1"
kind = "vcpu"
do = ["read 0x8000_2000", "write 0x8000_3000"]
[[actor]]
name = "vcpu2"
kind = "vcpu"
do = ["write 0x8000_0000"]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 16K", "age 0x8000_0000 16K"]
"""


def test_explore_progress_on_a_pasted_scenario(server, page):
    """An exploration long enough (1,727,327 states, seconds; 280,000 ended within one
    progress interval once the explorer was 3.5x faster) for explore_progress messages:
    the panel counts states while it runs, then shows the result."""
    page.goto(server.url + "/")
    page.locator("details#paste > summary").click()
    page.locator('textarea[name="scenario"]').fill(PROGRESS_SCENARIO)
    page.locator("details#paste").get_by_role("button", name="Create session").click()
    page.wait_for_url(re.compile(r"/s/[^/]+/"))
    wait_live(page)
    panel = page.locator(".panel.explore")
    panel.evaluate('e => e.scrollIntoView({block: "end"})')
    panel.get_by_role("button", name="explore", exact=True).click()
    text = panel.locator(".row > span.small")
    expect(text).to_have_text(re.compile(r"^[1-9][\d,]* states of at most [\d,]+ · depth \d+$"))
    seen = text.inner_text()
    panel.evaluate("e => e.scrollIntoView({block: 'end'})")  # it grew a line
    shot(page, "explore-4-progress")
    expect(text).to_have_text("done", timeout=60_000)
    states = int(re.match(r"[\d,]+", seen)[0].replace(",", ""))
    total = int(
        re.search(r"([\d,]+)</b> states", panel.locator(".summary").inner_html())[1].replace(
            ",", ""
        )
    )
    assert 0 < states <= total, (seen, total)  # progress counts distinct states
    expect(panel.locator("table.finals tbody tr")).to_have_count(40)
    expect(panel).to_contain_text("No interleaving violates a check.")

"""End to end in Chromium: what a new user ran into (issue 6, "Defects found when tried as
a new user would"): failed STXRs explained, exact interleaving counts, explore from this
moment with cancel, keyboard focus, a bounded stack of messages, dark mode, no 404s."""

from __future__ import annotations

import json
import re

import pytest
from e2ehelpers import (
    SEED_RACE,
    STXR_FAIL,
    open_example,
    position,
    require_playwright,
    row,
    shot,
    step_keys,
    wait_live,
    wait_position,
)

from tests.scenario_texts import MEDIUM, WIDE

expect = require_playwright()
pytestmark = pytest.mark.e2e


def create(page, server, text: str) -> None:
    """A session from scenario text (the JSON form of POST /sessions/new), opened."""
    page.goto(server.url + "/")
    csrf = page.evaluate("() => document.querySelector('[name=csrfmiddlewaretoken]').value")
    answer = page.request.post(
        server.url + "/sessions/new",
        data=json.dumps({"scenario": text}),
        headers={"Content-Type": "application/json", "X-CSRFToken": csrf},
    )
    assert answer.status == 201, answer.text()
    page.goto(answer.json()["url"])
    wait_live(page)


def luminance(rgb: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", rgb)[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(fg: str, bg: str) -> float:
    a, b = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def colors(page, selector: str) -> tuple[str, str]:
    return page.locator(selector).first.evaluate(
        "el => { const s = getComputedStyle(el); return [s.color, s.backgroundColor]; }"
    )


def test_a_failed_stxr_says_what_it_attempted_and_what_cleared_the_monitor(server, page):
    open_example(page, server, SEED_RACE)
    step_keys(page, STXR_FAIL[:9])
    fail = page.locator(".tl-lanes .ev.fail")
    fail.click()
    detail = page.locator(".tl-detail")
    expect(detail).to_contain_text(
        "attempted 0x4000037f (would change S2AP rw→ro, clear AF); nothing written: "
        "the exclusive monitor was cleared by vcpu0 hw-update #"
    )
    expect(detail).not_to_contain_text("changed s2ap")
    hw = page.locator(".tl-lanes .ev.k-hw").last.get_attribute("data-seq")
    expect(detail).to_contain_text(f"vcpu0 hw-update #{hw};")
    leaf = page.evaluate("() => [...window.ptviz.store.lastFail.keys()][0]")
    expect(row(page, leaf).locator(".fail-tag")).to_have_attribute(
        "title", re.compile(r"attempted 0x4000037f .*cleared by vcpu0 hw-update")
    )
    shot(page, "ux-stxr-fail-explained")


def test_keys_act_on_the_session_with_the_tree_focused_and_i_selects_the_ipa(server, page):
    open_example(page, server, SEED_RACE)
    step_keys(page, STXR_FAIL[:3])
    page.locator(".tree-space .tr.row").last.click()  # the tree has focus now
    page.keyboard.press("Home")
    wait_position(page, 0)
    page.keyboard.press("End")
    wait_position(page, 3)
    page.locator(".tree-space .tr.row").last.click()
    page.keyboard.press("Space")  # run / pause, as the help says
    expect(page.locator(".actors article.actor.st-done")).to_have_count(2)
    assert position(page) > 3
    # `i` selects the picked address: typing replaces it
    page.locator(".tree-space .tr.row").last.click()
    ipa = page.locator("#inject-ipa")
    expect(ipa).not_to_have_value("")
    page.locator(".tree-space .tr.row").last.click()
    page.keyboard.press("i")
    expect(ipa).to_be_focused()
    page.keyboard.type("0x8000_0000")
    expect(ipa).to_have_value("0x8000_0000")


def test_messages_stack_at_most_three_and_never_move_the_work_area(server, browsing):
    page = browsing.page()
    open_example(page, server, SEED_RACE)
    work = page.locator(".work").bounding_box()
    for n in range(6):
        page.evaluate(f"() => window.ptviz.notices.error('forbidden', 'refused #{n}')")
    notices = page.locator(".notices .notice:visible")
    expect(notices).to_have_count(3)
    expect(notices.first).to_contain_text("refused #5")
    more = page.locator(".notices .notice-more")
    expect(more).to_have_text("+3 older")
    assert page.locator(".work").bounding_box() == work
    shot(page, "ux-notices-capped")
    more.click()
    expect(notices).to_have_count(6)
    assert page.locator(".work").bounding_box() == work
    page.keyboard.press("Escape")
    expect(page.locator(".notices .notice")).to_have_count(0)


def test_dark_mode_is_honoured_with_readable_contrast_and_no_404(server, browsing):
    ctx = browsing.context()
    failed = []
    ctx.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    page = browsing.page(ctx)
    page.emulate_media(color_scheme="dark")
    page.goto(server.url + "/")
    fg, bg = colors(page, ".card button")
    assert contrast(fg, bg) >= 4.5, (fg, bg)
    body_fg, body_bg = colors(page, "body")
    assert luminance(body_bg) < 0.05 and contrast(body_fg, body_bg) >= 7
    shot(page, "ux-dark-gallery")
    open_example(page, server, SEED_RACE)
    step_keys(page, STXR_FAIL[:9])
    root_fg, root_bg = colors(page, ".ptviz-root")
    assert luminance(root_bg) < 0.05, root_bg
    for sel in (".panel", ".toolbar", ".tree-space .tr.row", ".tl-detail"):
        fg, _ = colors(page, sel)
        panel_bg = colors(page, ".panel")[1]
        assert contrast(fg, panel_bg) >= 7, (sel, fg, panel_bg)
    shot(page, "ux-dark-session")
    page.goto(server.url + "/docs/protocol")
    page.goto(server.url + "/s/no-such-link/")
    assert failed == [f"404 {server.url}/s/no-such-link/"], failed
    icons = page.locator('link[rel="icon"]')
    expect(icons).to_have_count(1)


def test_exact_interleaving_counts_and_a_cancellable_explore_from_this_moment(server, page):
    # A search long enough to cancel (four actors: far more states than the limit).
    create(page, server, WIDE)
    page.keyboard.press("e")
    cancel = page.locator(".panel.explore button", has_text="cancel")
    expect(cancel).to_be_visible()
    expect(page.locator(".panel.explore .explore-status")).to_contain_text("states of at most")
    cancel.click()
    expect(page.locator(".panel.explore")).to_contain_text("cancelled after")
    expect(cancel).to_be_hidden()
    # to the end: the count is exact (a JavaScript number would round it)
    create(page, server, MEDIUM)
    page.keyboard.press("e")
    summary = page.locator(".panel.explore .summary")
    expect(summary).to_contain_text("9,535,360,195,439,978,008,223,968,594,754", timeout=60_000)
    expect(summary).to_contain_text("79,522")
    shot(page, "ux-explore-exact-counts")


INJECT_LATER = """
name = "v4.6, the race injected later"
kernel = "v4.6"
[machine]
hafdbs = 1
ha = true
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
count = 2
af = false
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_1000"]
[[actor]]
name = "host0"
kind = "host"
do = ["flush_tlb"]
"""


def test_explore_includes_injected_operations_and_opens_counterexamples_there(server, page):
    """The ux review's defect 2: run to the end, inject the racing pair, explore: the lost
    update is found from this moment, and its counterexample forks at this moment."""
    create(page, server, INJECT_LATER)
    page.keyboard.press("r")
    expect(page.locator(".actors article.actor.st-done")).to_have_count(2)
    for actor, op in (("vcpu0", "read 0x8000_0000"), ("host0", "set_readonly 0x8000_0000")):
        page.evaluate(f"() => window.ptviz.actions.inject('{actor}', '{op}')")
        expect(page.locator(".actors")).to_contain_text(op)
    here = position(page)
    page.keyboard.press("e")
    panel = page.locator(".panel.explore")
    expect(panel.locator(".summary")).to_be_visible(timeout=30_000)
    expect(panel.locator(".from")).to_contain_text(f"from position {here}")
    expect(panel).to_contain_text("no_lost_update")
    expect(panel).not_to_contain_text("No interleaving violates a check")
    shot(page, "ux-explore-from-moment")
    before = page.url
    panel.locator("button", has_text="open counterexample").click()
    page.wait_for_url(lambda url: url != before and f"at={here}" in url)
    wait_live(page)
    assert position(page) == here
    page.keyboard.press("End")
    wait_position(page, page.evaluate("() => window.ptviz.store.decisions"))
    assert position(page) > here
    expect(page.locator(".panel.violations")).to_be_visible()
    expect(page.locator(".panel.violations")).to_contain_text("no_lost_update")
    ops = page.evaluate("() => window.ptviz.store.events.map(e => e.op)")
    assert "set_readonly" in ops and None not in ops, ops


def test_the_scenario_source_is_shown_edited_and_re_run_as_a_fork(server, page):
    open_example(page, server, SEED_RACE)
    page.locator(".ptviz-head button", has_text="scenario").click()
    text = page.locator(".source-pop textarea")
    expect(text).to_be_visible()
    original = text.input_value()
    assert 'kernel = "seed"' in original and "[[actor]]" in original
    # a bad edit: refused inline, the offending line selected, the text kept
    broken = original.replace('"set_readonly 0x8000_0000"', '"explode 0x8000_0000"')
    text.fill(broken)
    page.locator(".source-pop button", has_text="re-run").click()
    error = page.locator(".source-pop .source-error")
    expect(error).to_contain_text("actor[1].do[0]")
    expect(error).to_contain_text("unknown operation")
    selected = text.evaluate("t => t.value.slice(t.selectionStart, t.selectionEnd)")
    assert "explode" in selected, selected
    assert text.input_value() == broken
    shot(page, "ux-source-error")
    # fixed: a new session from the edited text
    text.fill(original.replace('"set_readonly 0x8000_0000"', '"wp 0x8000_0000"'))
    before = page.url
    page.locator(".source-pop button", has_text="re-run").click()
    page.wait_for_url(lambda url: url != before and "/s/" in url)
    wait_live(page)
    expect(page.locator(".ptviz-head .muted", has_text="fork")).to_be_visible()
    ops = page.evaluate("() => window.ptviz.store.actors.map(a => a.ops)")
    assert ["wp 0x8000_0000"] in ops, ops


def test_the_form_builder_adds_and_removes_rows_and_starts_from_an_example(server, page):
    page.goto(server.url + "/?from=wp_range_seed#builder")
    form = page.locator("#builder-form")
    expect(form).to_be_visible()
    # the example is in the form: its actors, and its expectations
    expect(form.locator('[name="actor-0-name"]')).to_have_value("vcpu0")
    expect(form.locator('[name="x-always"]')).not_to_have_value("")
    maps = form.locator("#map-rows tbody tr")
    actors = form.locator("#actor-rows tbody tr")
    n_maps, n_actors = maps.count(), actors.count()
    for _ in range(5):
        form.locator("button.add-row[data-add=map]").click()
    expect(maps).to_have_count(n_maps + 5)
    form.locator("button.add-row[data-add=actor]").click()
    expect(actors).to_have_count(n_actors + 1)
    new_actor = actors.last
    expect(new_actor.locator("input").first).to_be_focused()
    new_actor.locator("input").first.fill("vcpu9")
    new_actor.locator("textarea").fill("read 0x8000_0000")
    new_actor.locator('input[aria-label$="TLB preload"]').fill("0x8000_0000")
    maps.last.locator("button.remove-row").click()
    expect(maps).to_have_count(n_maps + 4)
    shot(page, "ux-builder")
    form.locator("button[type=submit]", has_text="Create session").click()
    page.wait_for_url(re.compile(r"/s/[^/]+/"))
    wait_live(page)
    names = page.evaluate("() => window.ptviz.store.actorNames()")
    assert names[-1] == "vcpu9", names
    vcpu9 = page.evaluate("() => window.ptviz.store.actors.at(-1)")
    assert [t["ipa"] for t in vcpu9["tlb"]] == ["0x80000000"], vcpu9


def test_a_viewer_sees_the_running_parameters_and_seven_digit_limits_fit(server, browsing):
    ctl = browsing.page()
    open_example(ctl, server, "wp_range_seed")
    boot = ctl.evaluate("() => JSON.parse(document.getElementById('bootstrap').textContent)")
    made = ctl.request.post(
        f"{server.url}/sessions/{boot['session']}/links",
        data=json.dumps({"role": "view"}),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-CSRFToken": boot["csrf"],
            "X-Ptviz-Token": boot["token"],
        },
    )
    viewer = browsing.page()
    viewer.goto(made.json()["url"])
    wait_live(viewer)
    ctl.get_by_label("Scheduling mode").select_option("random")
    ctl.get_by_label("Speed").select_option("2")
    ctl.get_by_label("Maximum steps").fill("5000000")
    ctl.locator(".toolbar button", has_text="run").first.click()
    expect(viewer.get_by_label("Maximum steps")).to_have_value("5000000")
    expect(viewer.get_by_label("Scheduling mode")).to_have_value("random")
    expect(viewer.get_by_label("Speed")).to_have_value("2")
    for page in (ctl, viewer):
        for label in ("Maximum steps", "Maximum states to explore"):
            field = page.get_by_label(label)
            field.fill("5000000")
            fits = field.evaluate("el => el.scrollWidth <= el.clientWidth")
            assert fits, f"{label}: 7 digits do not fit"
    shot(viewer, "ux-viewer-run-params")
    ctl.evaluate("() => window.ptviz.actions.pause()")  # (the run may have ended by now)


def test_timeline_chips_fit_six_digit_seq_numbers(server, page):
    open_example(page, server, SEED_RACE)
    step_keys(page, STXR_FAIL[:9])
    # the events of a long run: the same kinds, with 6-digit seq numbers
    page.evaluate(
        """() => { const s = window.ptviz.store;
           const late = s.events.map((e, i) => ({...e, seq: 123450 + i}));
           s.addEvents(late, false); window.ptviz.timeline.render(); }"""
    )
    overlaps = page.locator(".tl-lanes .ev").evaluate_all(
        """els => els.filter(el => {
             const seq = el.querySelector('.seq');
             const text = [...el.childNodes].find(n => n.nodeType === 3);
             if (!seq || !text) return false;
             const r = document.createRange(); r.selectNodeContents(text);
             const label = r.getBoundingClientRect(), box = el.getBoundingClientRect();
             const s = seq.getBoundingClientRect();
             return s.left < label.right || s.right > box.right;
           }).map(el => el.textContent)"""
    )
    assert overlaps == [], overlaps
    shot(page, "ux-timeline-six-digits")


def test_the_timeline_renders_the_chips_around_its_view(server, page):
    """400 events (a fast run's timeline): the chips in and around the view exist, the
    newest at the right end; scrolled to the start, the oldest are there."""
    open_example(page, server, SEED_RACE)
    step_keys(page, STXR_FAIL[:9])
    page.evaluate(
        """() => { const s = window.ptviz.store; const late = [];
           for (let i = 0; i < 400; i++) late.push({...s.events[i % s.events.length], seq: 1000 + i});
           s.addEvents(late, false); window.ptviz.timeline.render(); }"""
    )
    chips = page.locator(".tl-lanes .ev")
    newest = page.locator('.tl-lanes .ev[data-seq="1399"]')
    expect(newest).to_be_in_viewport()
    assert 0 < chips.count() < 400
    assert page.locator('.tl-lanes .ev[data-seq="1000"]').count() == 0
    page.locator(".tl-scroll").evaluate("el => { el.scrollLeft = 0; }")
    oldest = page.locator('.tl-lanes .ev[data-seq="1000"]')
    expect(oldest).to_be_in_viewport()
    assert newest.count() == 0
    # a click on a chip far from the view selects it and brings it into view
    page.evaluate("() => window.ptviz.timeline.selectSeq(1399, false)")
    expect(page.locator('.tl-lanes .ev.sel[data-seq="1399"]')).to_be_in_viewport()
    shot(page, "ux-timeline-window")


def test_a_refused_paste_has_the_line_its_error_names_selected(server, page):
    page.goto(server.url + "/")
    page.locator("details#paste > summary").click()
    bad = INJECT_LATER.replace('do = ["flush_tlb"]', 'do = ["flush_tlb", "explode 0x8000_0000"]')
    page.locator('textarea[name="scenario"]').fill(bad)
    page.locator("details#paste").get_by_role("button", name="Create session").click()
    expect(page.locator("#scenario-error")).to_contain_text("actor[1].do[1]")
    expect(page.locator("#scenario-error")).to_contain_text("is selected below")
    text = page.locator('textarea[name="scenario"]')
    assert text.input_value().strip() == bad.strip()
    selected = text.evaluate("t => t.value.slice(t.selectionStart, t.selectionEnd)")
    assert "explode" in selected, selected
    assert page.url == server.url + "/#paste"  # the gallery's address, not the POST target

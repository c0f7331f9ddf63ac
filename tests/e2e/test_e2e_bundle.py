"""End to end in Chromium: bug-report bundles (issue 7) with moments (issue 6). A viewer
in the past exports the bundle of the path to its own moment ("report…" -> "export
bundle"); importing that file in the gallery shows the replay's progress and opens the new
session at that moment, its state hash the one the first session had there."""

from __future__ import annotations

import re

import pytest
from e2ehelpers import LOST, V46_RACE, open_example, require_playwright, shot, step_keys, wait_live

expect = require_playwright()
pytestmark = pytest.mark.e2e


def store(page, expr: str):
    return page.evaluate(f"() => window.ptviz.store.{expr}")


def test_export_the_bundle_of_my_moment_and_import_it_at_that_moment(server, browsing, tmp_path):
    a = browsing.page()
    open_example(a, server, V46_RACE)
    step_keys(a, LOST)
    a.locator(".tree-vp").click()
    for _ in range(4):  # travel back to step 6; the head stays at 10
        a.keyboard.press("b")
    expect(a.locator(".moment-bar .where")).to_contain_text(f"step 6 of {len(LOST)}")
    a.wait_for_function("() => window.ptviz.store.cursor?.moment === '6'")
    want = store(a, "hash")

    a.locator(".bugreport summary").click()
    link = a.locator(".bugreport a", has_text="export bundle")
    expect(link).to_have_attribute("href", re.compile(r"/bundle\?moment=6&"))
    a.get_by_role("button", name="report", exact=True).click()
    expect(a.locator(".bugreport .report-text")).to_contain_text("VERDICT: no check violated")
    shot(a, "bundle-1-report-of-my-moment")
    with a.expect_download() as download:
        link.click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name.endswith("-at-6.bundle.json")

    b = browsing.page(browsing.context())
    b.goto(server.url + "/")
    b.locator("details#import summary").click()
    form = b.locator("form#bundle-import")
    form.locator("input[type=file]").set_input_files(str(path))
    form.get_by_role("button", name="Open at its moment").click()
    b.wait_for_url(re.compile(r"/s/[^/]+/\?at=6&h=" + want[:12]))
    wait_live(b)
    expect(b.locator(".moment-bar .where")).to_contain_text("step 6 of 6")
    b.wait_for_function("() => window.ptviz.store.cursor?.moment === '6'")
    assert store(b, "hash") == want
    assert b.locator(".notice", has_text="does not match").count() == 0
    shot(b, "bundle-2-imported-at-its-moment")

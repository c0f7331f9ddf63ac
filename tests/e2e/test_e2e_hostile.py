"""Script in every user-supplied string that reaches a page is shown as text and never runs
(issue 9, "Hostile input"): the scenario's name, description and comments, actor names,
a viewer's display name (presence), a link's label, an injected operation echoed in an
error, the report, an uploaded dump's file name and a refused bundle's file name (echoed in
the error). Each payload calls alert(N) when it runs; no dialog may open, no element the
payloads would create may exist, and each payload's text must be on the page literally."""

from __future__ import annotations

import json
import os
import re

import pytest
from e2ehelpers import ROOT, Server, require_playwright, shot, step_keys, wait_live

expect = require_playwright()
pytestmark = pytest.mark.e2e


def payload(n: int) -> str:
    return f"<img src=x onerror=alert({n})>"


# Actor names may not hold spaces: markup without them.
VCPU, HOST = "v<svg/onload=alert(3)>", "h<img/src/onerror=alert(4)>"
OP = "<svg/onload=alert(8)>"  # (an error names an operation by its first word)
SCENARIO = f"""# {payload(9)} a comment
name = "N{payload(1)}<script>alert(10)</script>"
description = "D{payload(2)}"
kernel = "seed"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
[[actor]]
name = "{VCPU}"
kind = "vcpu"
do = ["read 0x8000_0000"]
[[actor]]
name = "{HOST}"
kind = "host"
do = ["wp 0x8000_0000 4K"]
"""
DUMP = (ROOT / "scenarios" / "dumps" / "small.stage2_page_tables").read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("e2e-hostile"))
    if os.environ.get("PTVIZ_E2E_PORT"):  # (a port of one's own on a shared machine)
        s.port = int(os.environ["PTVIZ_E2E_PORT"])
        s.url = f"http://127.0.0.1:{s.port}"
    s.start()
    yield s
    s.stop()


class Watch:
    """The dialogs a page opened (each dismissed)."""

    def __init__(self, page):
        self.page = page
        self.dialogs: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def inert(self, *literal: str) -> None:
        """Nothing ran, nothing was injected, and each string is shown as text."""
        page = self.page
        for text in literal:
            expect(page.locator("body")).to_contain_text(text)
        injected = page.evaluate(
            """() => [...document.querySelectorAll('[onerror],[onload],img[src="x"],svg[onload]')]
                .map(e => e.outerHTML)
                .concat([...document.scripts]
                  .filter(s => !/json/.test(s.type) && s.text.includes('alert('))
                  .map(s => s.text))"""
        )
        assert injected == [], injected
        page.wait_for_timeout(300)  # (an onerror fires once its image failed to load)
        assert self.dialogs == [], self.dialogs


def post_json(page, url: str, body: dict, csrf: str, token: str | None = None):
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    headers["X-CSRFToken"] = csrf
    if token:
        headers["X-Ptviz-Token"] = token
    return page.request.post(url, data=json.dumps(body), headers=headers)


def test_every_user_string_on_the_session_page_is_inert(server, browsing):
    owner = browsing.page()
    watch = Watch(owner)
    owner.goto(server.url + "/")
    csrf = owner.evaluate("() => document.querySelector('[name=csrfmiddlewaretoken]').value")
    made = post_json(owner, server.url + "/sessions/new", {"scenario": SCENARIO}, csrf)
    assert made.status == 201, made.text()
    owner.goto(made.json()["url"])
    wait_live(owner)
    boot = owner.evaluate("() => JSON.parse(document.getElementById('bootstrap').textContent)")

    # a labelled view link, opened by a second viewer who names itself
    link = post_json(
        owner,
        f"{server.url}/sessions/{boot['session']}/links",
        {"role": "view", "label": payload(6)},
        boot["csrf"],
        boot["token"],
    )
    assert link.status == 201, link.text()
    guest = browsing.page()
    guest_watch = Watch(guest)
    guest.goto(link.json()["url"])
    wait_live(guest)
    guest.locator(".name-in").fill(payload(5))
    guest.locator(".name-in").press("Enter")
    guest.locator(".name-in").blur()
    owner.locator(".name-in").fill(payload(7))
    owner.locator(".name-in").blur()
    watch.inert(payload(5), payload(6))  # (presence: the guest's name and link label)

    # the actors' names in the cards, the timeline and the tree; an echoed operation
    step_keys(owner, [VCPU, HOST])
    inject = {"actor": HOST, "op": OP}
    refused = owner.evaluate(
        "f => window.ptviz.conn.command('inject', f).then(() => 'taken', e => e.message || e.code)",
        inject,
    )
    assert "unknown operation" in json.dumps(refused), refused
    expect(owner.locator("body")).to_contain_text("unknown operation")
    # the report of this position
    owner.locator(".bugreport summary").click()
    owner.locator(".bugreport button", has_text=re.compile(r"^report$")).click()
    expect(owner.locator(".report-text")).to_contain_text(VCPU)

    watch.inert(f"N{payload(1)}", f"D{payload(2)}", VCPU, HOST, payload(5), payload(6), OP)
    guest_watch.inert(f"N{payload(1)}", f"D{payload(2)}", VCPU, payload(7))
    shot(owner, "hostile-session-owner")
    shot(guest, "hostile-session-guest")


def test_imported_file_names_and_refusals_are_inert(server, browsing):
    page = browsing.page()
    watch = Watch(page)
    page.goto(server.url + "/")
    page.locator("#import summary").click()
    # a dump whose file name is markup: the session is named after it
    page.locator("#dump-import input[name=dump]").set_input_files(
        {"name": f"{payload(11)}.stage2_page_tables", "mimeType": "text/plain", "buffer": DUMP}
    )
    page.locator("#dump-import button[type=submit]").click()
    page.wait_for_url(re.compile(r"/s/[^/]+/"))
    wait_live(page)
    watch.inert(f"stage-2 dump {payload(11)}")  # (its title)
    shot(page, "hostile-dump-session")
    # a refused bundle: its file name comes back in the error
    page.goto(server.url + "/")
    page.locator("#import summary").click()
    page.locator("#bundle-import input[name=bundle]").set_input_files(
        {"name": f"{payload(12)}.bundle.json", "mimeType": "application/json", "buffer": b"{}"}
    )
    page.locator("#bundle-import button[type=submit]").click()
    expect(page.locator(".error, [role=alert]").first).to_contain_text(payload(12))
    watch.inert(payload(12))
    shot(page, "hostile-import-refused")

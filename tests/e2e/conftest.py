"""Fixtures of the end-to-end tests: a real `manage.py serve` per test module (embedded
deployment, a SQLite file of its own, a free port) and headless Debian Chromium driven by
Playwright's sync API (never a downloaded browser: executable_path=/usr/bin/chromium).

Skipped when Playwright or Chromium is missing, and failed then under CI (.ci/run
installs Chromium; `pip install -e '.[test]'` installs Playwright). Screenshots go to
artifacts/e2e/ (a test's own, and every open page's when a test fails).
"""

from __future__ import annotations

import contextlib
import os
import re

import pytest
from e2ehelpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, VIEWPORT, Server


def _need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} (.ci/run installs it)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def playwright_api():
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _need("Playwright for Python is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        _need(f"Chromium is not at {CHROMIUM} (apt-get install -y chromium)")
    expect.set_options(timeout=TIMEOUT_MS)
    # this run's screenshots only (artifacts/e2e/ is ours; the rest of artifacts/ is not)
    if ARTIFACTS.is_dir():
        for old in ARTIFACTS.iterdir():
            if old.suffix in (".png", ".txt", ".log"):
                old.unlink()
    pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()


@pytest.fixture(scope="session")
def browser(playwright_api):
    b = playwright_api.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    s = Server(tmp_path_factory.mktemp("e2e-serve"))
    s.start()
    yield s
    s.stop()
    if getattr(request.node, "e2e_failed", False):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"FAILED-{request.node.name}-serve.log").write_text(s.output())


class Browsing:
    """The contexts (independent browser profiles) a test opened; closed after it."""

    def __init__(self, browser):
        self.browser = browser
        self.contexts = []
        self.console: list[str] = []

    def context(self):
        ctx = self.browser.new_context(viewport=VIEWPORT)
        ctx.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(ctx)
        return ctx

    def page(self, ctx=None):
        page = (ctx or self.context()).new_page()
        page.on(
            "console",
            lambda m: m.type in ("error", "warning") and self.console.append(f"{m.type}: {m.text}"),
        )
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        return page

    def pages(self):
        return [p for ctx in self.contexts for p in ctx.pages]

    def close(self):
        for ctx in self.contexts:
            with contextlib.suppress(Exception):
                ctx.close()


@pytest.fixture
def browsing(browser, request):
    b = Browsing(browser)
    yield b
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        for i, page in enumerate(b.pages()):
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / f"FAILED-{name}-{i}.png"))
        if b.console:
            (ARTIFACTS / f"FAILED-{name}-console.txt").write_text("\n".join(b.console))
    b.close()
    # No uncaught exception in any page of the test.
    errors = [c for c in b.console if c.startswith("pageerror")]
    assert not errors, errors


@pytest.fixture
def page(browsing):
    return browsing.page()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call":
        item.rep_call = rep
        if rep.failed:
            item.parent.e2e_failed = True
    return rep

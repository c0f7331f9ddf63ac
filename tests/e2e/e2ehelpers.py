"""Helpers of the end-to-end tests (fixtures are in conftest.py): a real `manage.py serve`
subprocess and the few page interactions every test repeats.

The server runs the embedded deployment (REDIS_URL unset: the in-process channel layer
and its engine worker processes) on a SQLite file of its own and a free port. Its output
goes to a file, as tests/web does with its engine workers (a pipe nobody reads would
fill up and stall it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ptviz.localservices import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
VIEWPORT = {"width": 1600, "height": 1000}
TIMEOUT_MS = 15_000  # any one websocket-driven DOM state

SEED_RACE = "seed_race_seed"
V46_RACE = "seed_race_v4.6"
# The walker's hardware AF update lands between the host's LDXR and STXR: host0 takes
# the lock, walks to the leaf and LDXRs it (4 micro-steps), vcpu0 walks three levels and
# sets AF (4), host0's STXR fails (the monitor was cleared), it reloads with LDXR, STXR
# succeeds and it unlocks (4). `python -m engine run scenarios/seed_race_seed.toml
# --schedule ... --trace` shows it.
STXR_FAIL = ["host0"] * 4 + ["vcpu0"] * 4 + ["host0"] * 4
# v4.6 (plain load/store): host0 loads the leaf (AF=0), the walker sets AF, host0's
# plain store writes the stale value back: AF is lost (tests/web/test_live.py's LOST).
LOST = ["vcpu0"] * 3 + ["host0"] * 4 + ["vcpu0"] + ["host0"] * 2


class Server:
    """`python manage.py serve` on a free port, a temporary SQLite file and no Redis."""

    def __init__(self, workdir: Path, workers: int = 2, env: dict | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "serve.log"
        self.db = workdir / "db.sqlite3"
        self.workers = workers
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Server:
        env = {
            k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")
        }
        env.update(
            DJANGO_SETTINGS_MODULE="ptviz.settings",
            DATABASE_URL=f"sqlite:///{self.db}",  # absolute: sqlite:////tmp/...
            PTVIZ_LOG="INFO",
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"manage.py serve exited:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"manage.py serve did not answer within {timeout} s:\n{self.output()}"
                )
            time.sleep(0.1)

    def output(self) -> str:
        try:
            return self.log.read_text()
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM: daphne stops, then `serve` stops its engine workers (SIGINT would do
        the same, but a runner started in the background may pass it on ignored)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --- page helpers -----------------------------------------------------------------------


def shot(page, name: str) -> Path:
    """A screenshot artifact: artifacts/e2e/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def wait_live(page) -> None:
    """Connected, hello and snapshot in, the start-level table's rows shown."""
    from playwright.sync_api import expect

    expect(page.locator(".toolbar .conn")).to_have_class(re.compile(r"\bc-live\b"))
    expect(page.locator(".tree-space .tr.row").first).to_be_visible()
    page.wait_for_function("() => window.ptviz && window.ptviz.store.haveSnapshot")


def open_example(page, server: Server, slug: str) -> None:
    """The gallery -> an example's "Open" -> its debugger page, live."""
    page.goto(server.url + "/")
    card = page.locator(f'.card.example[data-slug="{slug}"]')
    card.get_by_role("button", name="Open").click()
    page.wait_for_url(re.compile(r"/s/[^/]+/"))
    wait_live(page)


def position(page) -> int:
    return int(page.locator(".pos-text b").inner_text())


def wait_position(page, n: int) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".pos-text b")).to_have_text(str(n))


def actor_key(page, name: str) -> str:
    """The keyboard shortcut (1 … 9) that steps actor `name`."""
    names = page.evaluate("() => window.ptviz.store.actorNames()")
    return str(names.index(name) + 1)


def step_keys(page, schedule: list[str], after=None) -> None:
    """Step each actor of the schedule with its number key, waiting for each step's delta
    (the position the toolbar shows) before the next key."""
    keys = {name: actor_key(page, name) for name in set(schedule)}
    start = position(page)
    for n, name in enumerate(schedule, 1):
        page.keyboard.press(keys[name])
        wait_position(page, start + n)
        if after is not None:
            after(n, name)


def timeline(page) -> list[dict]:
    """The timeline's event boxes in order: seq, actor lane, label, classes, title."""
    return page.locator(".tl-lanes .ev").evaluate_all(
        """els => els.map(e => ({seq: Number(e.dataset.seq), op: e.dataset.op,
            label: e.childNodes.length ? [...e.childNodes].filter(n => !(n.classList && (n.classList.contains('seq') || n.classList.contains('mark')))).map(n => n.textContent).join('') : '',
            cls: e.className, title: e.title}))"""
    )


def row(page, addr: str):
    """The tree line of the descriptor at `addr` (its data-key)."""
    return page.locator(f'.tree-space .tr.row[data-key="{addr}"]')


def leaf_cells(page, addr: str) -> dict:
    r = row(page, addr)
    out = {}
    for f in ("raw", "type", "s2ap", "af", "dbm", "who"):
        sel = f".c-{f}" if f in ("raw", "who") else f".f-{f}"
        out[f] = r.locator(sel).inner_text().strip()
    return out


def last_leaf_addr(page) -> str:
    """The level-3 table's descriptor of the scenario's one leaf (deepest row shown), once
    the page holds its table (it subscribes to the tables it opens after it is live)."""
    return page.wait_for_function(
        """() => { const s = window.ptviz.store; let best = null;
           for (const [addr, hit] of s.rowsByAddr) {
             const d = hit.row.decoded;
             if ((d.type === 'page' || d.type === 'block') && (!best || d.level > best[1])) best = [addr, d.level];
           }
           return best && best[1] === 3 && best[0]; }"""
    ).json_value()


def require_playwright():
    """Playwright's `expect`, or skip the module (fail under CI) when it is missing."""
    import pytest

    try:
        from playwright.sync_api import expect
    except ImportError:
        msg = "Playwright for Python is not installed (pip install -e '.[test]')"
        if os.environ.get("CI"):
            raise
        pytest.skip(msg, allow_module_level=True)
    return expect

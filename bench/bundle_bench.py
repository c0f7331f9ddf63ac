"""Bundle sizes and import times (`make bench-bundle`, `python -m bench.bundle_bench`).

Each figure next to its baseline measured in the same run: the ptviz-recording/1 JSON
export of the same session (its size, and LiveSession.from_recording's import time).
Targets (issue 7): at most 100 KB per 10,000 decisions of a racy scenario; the 1 GiB
write-protect run (262,144 4K leaves, host `wp 0x8000_0000 1G` racing a vCPU) under
1 MB, imported in under 1 s.

Import to open, the browser's path (not with --quick): a real `manage.py serve`
(embedded, its own SQLite file) on --port; the 1 GiB bundle POSTed to /bundles/import
as the gallery does (multipart, NDJSON progress), its session page fetched, its
websocket (the page's own URL: `at` and `h` of the moment) opened, until the first
snapshot arrives; the session's cursor must be at the bundle's moment with no notice
(the state hash matched). Baselines in the same run, through the same steps: the
same session's recording imported (/recordings/import), and a fresh session of the
scenario (/sessions/new: the floor, no decisions). Best of --repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import tempfile
import time
import urllib.request
import uuid

from engine import bundle as BD
from engine.session import LiveSession

WP_1G = """
name = "wp 1 GiB racing a vCPU"
kernel = "seed"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
size = "4K"
count = 262144
af = false
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["write 0x8000_0000", "read 0x9000_0000"]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 1G"]
"""


def racy_scenario(pages: int = 2048) -> str:
    """Three CPUs on the same pages: a vCPU touching them, a host write-protecting and
    another aging them, scheduled at random: the worst case for run-length encoding."""
    touches = ", ".join(f'"write {0x8000_0000 + 4096 * k:#x}"' for k in range(0, pages, 2))
    return f"""
name = "racy: vCPU writes vs wp vs age"
kernel = "v4.6"
[machine]
ha = true
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
size = "4K"
count = {pages}
af = false
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = [{touches}]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 {pages * 4}K"]
[[actor]]
name = "host1"
kind = "host"
do = ["age 0x8000_0000 {pages * 4}K"]
"""


def timed(fn, repeat: int = 3):
    best, out = None, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best, out


def measure(title: str, text: str, mode: str, steps: int, repeat: int) -> dict:
    live = LiveSession(text)
    live.run(steps, mode=mode, seed=7)
    n = live.position
    build_s, bundle = timed(lambda: BD.from_session(live), repeat)
    data = BD.dumps(bundle)
    import_s, session = timed(lambda: BD.replay(BD.loads(data)), repeat)
    assert session.state_hash() == live.state_hash()
    rec = json.dumps(live.export()).encode()
    rec_import_s, _ = timed(lambda: LiveSession.from_recording(json.loads(rec)), 1)
    return {
        "session": title,
        "decisions": n,
        "bundle_bytes": len(data),
        "bundle_bytes_per_10k": len(data) * 10_000 / max(n, 1),
        "bundle_build_s": build_s,
        "bundle_import_s": import_s,
        "recording_bytes": len(rec),
        "recording_import_s": rec_import_s,
        "hash_points": len(bundle.hashes),
    }


# --- import to open, through the server ------------------------------------------------------
def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: application/json\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _post(dep, path: str, body: bytes, content_type: str, accept: str):
    csrf = next(c.value for c in dep.cookies if c.name == "csrftoken")
    req = urllib.request.Request(
        dep.url + path,
        data=body,
        headers={"Content-Type": content_type, "Accept": accept, "X-CSRFToken": csrf},
        method="POST",
    )
    return dep.opener.open(req, timeout=600)


def _open_page(dep, url: str) -> str:
    """GET the session page; its websocket URL (with the moment it opens at)."""
    with dep.opener.open(url, timeout=120) as r:
        html = r.read().decode()
    boot = json.loads(re.search(r'id="bootstrap"[^>]*>(.*?)</script>', html, re.S)[1])
    return f"ws://127.0.0.1:{dep.port}{boot['ws']}"


async def _first_snapshot(dep, ws_url: str) -> dict:
    from bench.web import Client

    client = await Client.open(ws_url, dep.url)
    try:
        return await client.start()
    finally:
        await client.close()


def _open_bundle(dep, data: bytes) -> tuple[float, dict, int]:
    """Seconds from the upload to the first snapshot; the snapshot; progress lines."""
    t0 = time.perf_counter()
    body, ctype = _multipart("bundle", "wp.bundle.json", data)
    progress, url = 0, None
    with _post(dep, "/bundles/import", body, ctype, "application/x-ndjson") as r:
        for line in r:
            msg = json.loads(line)
            if "progress" in msg:
                progress += 1
            elif "url" in msg:
                url = msg["url"]
            else:
                raise RuntimeError(f"/bundles/import: {msg}")
    snap = asyncio.run(_first_snapshot(dep, _open_page(dep, url)))
    return time.perf_counter() - t0, snap, progress


def _open_created(dep, path: str, body: bytes, ctype: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    with _post(dep, path, body, ctype, "application/json") as r:
        url = json.loads(r.read())["url"]
    snap = asyncio.run(_first_snapshot(dep, _open_page(dep, url)))
    return time.perf_counter() - t0, snap


# Keeps the gallery's progress texts across the navigation to the session page.
PROGRESS_PROBE = """
addEventListener("DOMContentLoaded", () => {
  const out = document.querySelector("form#bundle-import .progress");
  if (!out) return;
  new MutationObserver(() => {
    const seen = JSON.parse(sessionStorage.getItem("ptvizProgress") || "[]");
    seen.push(out.textContent);
    sessionStorage.setItem("ptvizProgress", JSON.stringify(seen));
  }).observe(out, { childList: true, characterData: true, subtree: true });
});
"""


def _open_in_chromium(dep, browser, path: str, moment: str) -> tuple[float, list[str]]:
    """Seconds from the gallery's "Open at its moment" click to the session page's first
    snapshot at the moment; the progress texts the gallery showed meanwhile."""
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        ctx.add_init_script(PROGRESS_PROBE)
        page = ctx.new_page()
        page.goto(dep.url + "/")
        page.locator("details#import summary").click()
        form = page.locator("form#bundle-import")
        form.locator("input[type=file]").set_input_files(path)
        t0 = time.perf_counter()
        form.get_by_role("button", name="Open at its moment").click()
        page.wait_for_function(
            "m => window.ptviz && window.ptviz.store.haveSnapshot"
            " && window.ptviz.store.cursor?.moment === m",
            arg=moment,
            timeout=120_000,
            polling=5,
        )
        seconds = time.perf_counter() - t0
        seen = page.evaluate("() => JSON.parse(sessionStorage.getItem('ptvizProgress') || '[]')")
        return seconds, seen
    finally:
        ctx.close()


def measure_open(port: int | None, repeat: int, chromium: bool = False) -> dict:
    """Import-to-open of the 1 GiB bundle through a real server, with its baselines."""
    import urllib.parse

    from bench.web import Deployment

    if chromium:
        from playwright.sync_api import sync_playwright

        from ptviz.localservices import CHROMIUM, CHROMIUM_ARGS

    live = LiveSession(WP_1G)
    live.run(10**7)
    bundle = BD.dumps(BD.from_session(live))
    recording = json.dumps(live.export()).encode()
    moment = str(live.position)
    dep = Deployment("embedded")
    if port is not None:
        dep.port, dep.url = port, f"http://127.0.0.1:{port}"
    dep.start()
    try:
        with dep.opener.open(dep.url + "/", timeout=30):
            pass  # the CSRF cookie
        rows: dict[str, list[float]] = {"bundle": [], "recording": [], "new": []}
        for _ in range(repeat):
            seconds, snap, progress = _open_bundle(dep, bundle)
            cursor = snap.get("cursor") or {}
            if cursor.get("moment") != moment or snap.get("notice"):
                raise RuntimeError(f"opened at {cursor} ({snap.get('notice')}), not {moment}")
            rows["bundle"].append(seconds)
            form = urllib.parse.urlencode({"scenario": WP_1G}).encode()
            rows["new"].append(
                _open_created(dep, "/sessions/new", form, "application/x-www-form-urlencoded")[0]
            )
        if chromium:
            rows["chromium"] = []
            with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
                path = os.path.join(tmp, "wp.bundle.json")
                with open(path, "wb") as f:
                    f.write(bundle)
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                for _ in range(repeat):
                    seconds, seen = _open_in_chromium(dep, browser, path, moment)
                    rows["chromium"].append(seconds)
                browser.close()
        body, ctype = _multipart("recording", "wp.json", recording)
        seconds, snap = _open_created(dep, "/recordings/import", body, ctype)
        if snap["position"] != live.position:
            raise RuntimeError(f"the recording opened at {snap['position']}")
        rows["recording"].append(seconds)
    finally:
        dep.stop()
    return {
        "decisions": live.position,
        "bundle_bytes": len(bundle),
        "recording_bytes": len(recording),
        "progress_lines": progress,
        "bundle_open_s": min(rows["bundle"]),
        "bundle_open_all_s": rows["bundle"],
        "recording_open_s": min(rows["recording"]),
        "new_session_open_s": min(rows["new"]),
        "chromium_open_s": min(rows["chromium"]) if chromium else None,
        "chromium_open_all_s": rows.get("chromium"),
        "chromium_progress_seen": seen if chromium else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bundle_bench", description=__doc__)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="skip the 1 GiB runs")
    p.add_argument("--port", type=int, help="the server's port (default: a free one)")
    p.add_argument("--repeat", type=int, default=3, help="import-to-open runs (best of)")
    p.add_argument(
        "--chromium",
        action="store_true",
        help="also time the gallery's import in headless Chromium (/usr/bin/chromium)",
    )
    args = p.parse_args(argv)
    rows = [measure("racy, 3 CPUs, random schedule", racy_scenario(), "random", 10_000, 3)]
    opened = None
    if not args.quick:
        rows.append(measure("wp 1 GiB racing a vCPU", WP_1G, "round_robin", 10**7, 2))
        opened = measure_open(args.port, args.repeat, args.chromium)
    if args.json:
        print(json.dumps({"bundles": rows, "import_to_open": opened}, indent=1))
        return 0
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(
        f"{'session':<32} {'decisions':>9} {'bundle':>10} {'/10k dec':>9} {'import':>8} "
        f"{'build':>7} | {'recording':>11} {'import':>8}"
    )
    for r in rows:
        print(
            f"{r['session']:<32} {r['decisions']:>9,} {r['bundle_bytes']:>9,}B "
            f"{r['bundle_bytes_per_10k'] / 1000:>7.1f}KB {r['bundle_import_s']:>7.3f}s "
            f"{r['bundle_build_s']:>6.2f}s | {r['recording_bytes']:>10,}B "
            f"{r['recording_import_s']:>7.2f}s"
        )
    if opened is not None:
        o = opened
        print(
            f"\nimport to open (upload -> page -> first snapshot, best of {args.repeat}), "
            f"{o['decisions']:,} decisions:\n"
            f"  bundle    {o['bundle_bytes']:>11,}B {o['bundle_open_s']:>7.3f}s "
            f"({o['progress_lines']} progress lines; all: "
            f"{', '.join(f'{x:.3f}' for x in o['bundle_open_all_s'])})\n"
            f"  recording {o['recording_bytes']:>11,}B {o['recording_open_s']:>7.3f}s\n"
            f"  new session of the scenario (no decisions) {o['new_session_open_s']:>7.3f}s"
        )
        if o["chromium_open_s"] is not None:
            print(
                f"  Chromium, gallery click -> first snapshot at the moment "
                f"{o['chromium_open_s']:.3f}s (all: "
                f"{', '.join(f'{x:.3f}' for x in o['chromium_open_all_s'])}); progress "
                f"shown: {' | '.join(o['chromium_progress_seen'][:3])} ..."
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

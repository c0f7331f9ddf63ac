"""`make bench-web`: the web debugger's figures, each next to a baseline.

    python -m bench.web [--json] [--quick] [--no-redis] [--no-browser]

Real deployments, started here as subprocesses on a temporary SQLite file and a free
port, exactly as README.md runs them: `manage.py serve` alone (embedded: the in-process
channel layer and its engine worker processes) and, when Redis answers on
127.0.0.1:6379, `manage.py serve` with REDIS_URL plus `manage.py engineworker`
processes (a channel prefix of its own, removed afterwards). The clients are a Python
websocket client (the `websockets` package) speaking docs/protocol.md, and headless
Debian Chromium (/usr/bin/chromium, through Playwright; never a downloaded browser).

1. latency: one `step` command sent -> its `ack` and its `delta` received by the same
   websocket client (p50, p99, max), on a 4,096-leaf and on a 1,048,576-leaf session.
   Baselines: a websocket round trip the consumer answers itself (a bad command: daphne
   and the consumer, no channel layer, no engine), the channel layer's own round trip
   (send + receive of an ack-sized and of a delta-sized message, in-process), and the
   engine's own step (SessionHost.command(step) with the database write left out).
2. throughput: a `run` at full speed (speed 0) of a host write-protecting 1,048,576 4K
   leaves (`wp` over 4 GiB, seed kernel: each leaf is one descriptor change), watched by
   one websocket client with the tree expanded from the start-level table down to the
   first level-3 table (deltas carry the changed entries of each): descriptor changes per
   second the client learns of (the root counters' read-only count in the deltas),
   micro-steps decided per second, events covered (listed + `omitted`), deltas and bytes
   per second. Target: 200,000 descriptor changes per second (issue 10). The same run on
   16,384 leaves, and the baselines: the core's own rate on the same workload
   (Machine.run_round_robin), LiveSession.step (what the worker calls), and SessionHost's
   run slices in-process without transport or database, each with and without the
   LiveSession checkpoints, and the cost of one checkpoint and of one delta (building,
   JSON encoding, channel layer).
3. first render: a 1,048,576-leaf session opened in headless Chromium: time from the
   navigation's start until the tree shows the root row with its counters ("1,048,576
   leaves") and the start-level rows, with the page load, the websocket's hello and
   snapshot and the root table's delta on the way; and the same session opened with a
   level-3 table expanded: a link to a leaf descriptor (`?d=<its address>`, the first
   leaf of the wp), rendered once leaf rows of that level-3 table are on screen. Cold
   (the engine worker loads the session from the database) and warm (a reload).
   Targets: under 1 s (root rows) and 500 ms (leaf rows, cold; issue 10). Baseline: the
   same for the one-leaf seed race example.
4. the browser's main thread during a full-speed run: the 1,048,576-leaf wp opened in
   headless Chromium with a level-3 table expanded (the leaf link of 3), the run started
   from the page (speed 0): the share of wall time the main thread spent in tasks
   (Chromium's `Performance.getMetrics` TaskDuration, through CDP; script, layout and
   style recalculation apart) and the descriptor changes per second the page learned of
   (its store's root counters). Target: under 50% busy (issue 10). Baseline: the same
   page with the session idle, over the same time.

Benchmarks are never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.cookiejar
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.engine import format_rate, format_table, host_info
from ptviz.localservices import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    flush_redis_prefix,
    free_port,
    redis_up,
)

ROOT = Path(__file__).resolve().parents[1]
BASE_IPA = 0x8000_0000
BASE_PA = 0x4000_0000
PAGE = 4096
ROOT_TABLE = "0x1000000000"  # engine.bits.TABLE_BASE: the start-level table
TARGET_CHANGES = 200_000
TARGET_RENDER_MS = 1000
TARGET_LEAF_RENDER_MS = 500  # cold, a level-3 table expanded (issue 10)
TARGET_BUSY = 0.5  # the page's main thread during a full-speed run (issue 10)
SECTIONS = ("render", "mainthread", "latency", "throughput", "baselines")


@dataclass(frozen=True)
class Config:
    latency_steps: int = 300  # timed steps per session size (after `warmup`)
    warmup: int = 20
    latency_sizes: tuple[int, ...] = (4096, 1 << 20)
    throughput_sizes: tuple[int, ...] = (1 << 20, 16384)
    throughput_seconds: float = 5.0
    render_leaves: int = 1 << 20
    render_reps: int = 3
    mainthread_seconds: float = 4.0
    baseline_seconds: float = 2.0
    layer_reps: int = 300


QUICK = Config(
    latency_steps=40,
    warmup=5,
    latency_sizes=(4096,),
    throughput_sizes=(65536,),
    throughput_seconds=1.5,
    render_leaves=65536,
    render_reps=1,
    mainthread_seconds=1.0,
    baseline_seconds=0.5,
    layer_reps=50,
)


# --- scenarios -----------------------------------------------------------------------------


def first_leaf(leaves: int) -> str:
    """The descriptor address of the wp scenario's first leaf (at BASE_IPA): the start-level
    table's first table entry, and the first table entry below it, down to level 3 (the
    tables Client.expand_down opens). Computed on an in-process LiveSession: the layout is
    the same as the server's."""
    from engine.session import LiveSession

    live = LiveSession(wp_scenario(leaves), snapshot_every=10**12)
    g = live.spec.geometry
    pa, level = int(ROOT_TABLE, 16), g.start_level
    while True:
        view = live.table_view(pa, level)
        row = next(r for r in view["rows"] if r["decoded"]["type"] != "invalid")
        if row["decoded"]["type"] != "table":
            return row["addr"]
        pa, level = int(row["decoded"]["next_table"], 16), level + 1


def wp_scenario(leaves: int, kernel: str = "seed") -> str:
    """One host write-protecting `leaves` young, writable 4K leaves (one change each)."""
    return (
        f'name = "bench: {kernel} wp over {leaves:,} 4K leaves"\n'
        f'kernel = "{kernel}"\n'
        f"[[map]]\nipa = {BASE_IPA:#x}\npa = {BASE_PA:#x}\ncount = {leaves}\naf = true\n"
        f'[[actor]]\nname = "host0"\nkind = "host"\n'
        f'do = ["wp {BASE_IPA:#x} {leaves * PAGE}"]\n'
    )


# --- statistics ----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


@dataclass
class Dist:
    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Dist:
        ms = [x * 1000 for x in seconds]
        return cls(len(ms), pct(ms, 0.5), pct(ms, 0.99), max(ms), statistics.fmean(ms))


# --- deployments ---------------------------------------------------------------------------


class Deployment:
    """A real server (and, distributed, engine workers) on a temporary SQLite file."""

    ports: list[int] = []  # --port: the ports to take, in order (else a free one)

    def __init__(self, mode: str, workers: int = 2):
        self.mode = mode
        self.workers = workers
        self.dir = Path(tempfile.mkdtemp(prefix=f"ptviz-webbench-{mode}-"))
        self.port = Deployment.ports.pop(0) if Deployment.ports else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = f"ptviz-bench-{uuid.uuid4().hex[:10]}:"
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "PTVIZ_CHANNEL_PREFIX")
        }
        env.update(
            DJANGO_SETTINGS_MODULE="ptviz.settings",
            DATABASE_URL=f"sqlite:///{self.dir / 'db.sqlite3'}",
            PTVIZ_LOG="INFO",  # the engine workers log "listening on" once ready
            # (the latency client sends its commands back to back: the per-connection rate
            # limit, 50/s in bursts of 200, refused them)
            PTVIZ_RATE="1000000",
            PTVIZ_RATE_BURST="1000000",
            PYTHONUNBUFFERED="1",
        )
        if mode == "redis":
            env.update(REDIS_URL=REDIS_URL, PTVIZ_CHANNEL_PREFIX=self.prefix)
        self.env = env
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.dir / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((name, proc, log))
        return proc

    def start(self, timeout: float = 90) -> Deployment:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        args = ["serve", "--no-migrate", "--port", str(self.port)]
        if self.mode == "embedded":
            args += ["--workers", str(self.workers)]
        self._spawn("serve", args)
        if self.mode == "redis":
            for k in range(self.workers):
                self._spawn(f"worker{k}", ["engineworker", "--name", f"bench-w{k}"])
        deadline = time.monotonic() + timeout
        while True:
            for name, proc, log in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{log.read_text()}")
            try:
                with self.opener.open(self.url + "/", timeout=2) as r:
                    ok = r.status == 200
            except OSError:
                ok = False
            if ok and all(
                "listening on" in log.read_text() or name == "serve" for name, _, log in self.procs
            ):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self.mode} deployment did not start")
            time.sleep(0.1)

    def create(self, scenario: str) -> dict:
        """POST /sessions/new: {"url", "session", "links": {"control", "view"}}."""
        csrf = next(c.value for c in self.cookies if c.name == "csrftoken")
        req = urllib.request.Request(
            self.url + "/sessions/new",
            # a form post (session_new reads request.POST); JSON answer
            data=urllib.parse.urlencode({"scenario": scenario}).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "X-CSRFToken": csrf,
            },
            method="POST",
        )
        try:
            with self.opener.open(req, timeout=120) as r:
                data = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"POST /sessions/new: {exc.code} {exc.read().decode()[:500]}"
            ) from None
        token = data["url"].rstrip("/").rsplit("/", 1)[-1]
        data["ws"] = f"ws://127.0.0.1:{self.port}/ws/sessions/{data['session']}/?token={token}"
        return data

    def engine_pids(self) -> list[int]:
        """The engine worker processes: `engineworker`s, or serve's spawned children."""
        if self.mode == "redis":
            return [proc.pid for name, proc, _ in self.procs if name != "serve"]
        serve = next(proc.pid for name, proc, _ in self.procs if name == "serve")
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == serve and b"spawn_main" in cmd:
                pids.append(int(d.name))
        return pids

    def engine_rss_mb(self) -> float:
        total = 0
        for pid in self.engine_pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def db_mb(self) -> float:
        return sum(f.stat().st_size for f in self.dir.glob("db.sqlite3*")) / 1e6

    def stop(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # serve then stops its engine workers
        for _, proc, _ in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
        if self.mode == "redis":
            flush_redis_prefix(self.prefix)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the websocket client ------------------------------------------------------------------


class Client:
    """One viewer speaking docs/protocol.md; records when each message arrived."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.backlog: list[tuple[float, dict, int]] = []
        self._last_tables: dict = {}

    @classmethod
    async def open(cls, url: str, origin: str) -> Client:
        from websockets.asyncio.client import connect

        ws = await connect(url, origin=origin, max_size=None, open_timeout=30)
        return cls(ws)

    async def recv(self, timeout: float = 60) -> tuple[float, dict, int]:
        if self.backlog:
            return self.backlog.pop(0)
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return time.perf_counter(), json.loads(raw), len(raw)

    async def until(self, pred, timeout: float = 60) -> tuple[float, dict, int]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching message")
            item = await self.recv(left)
            if item[1].get("type") == "error" and item[1].get("code") not in ("bad_message",):
                raise RuntimeError(f"server error: {item[1]}")
            if pred(item[1]):
                return item

    async def send(self, cmd: str, **fields) -> tuple[int, float]:
        self.next_id += 1
        msg = {"v": 1, "type": "command", "id": self.next_id, "cmd": cmd, **fields}
        t0 = time.perf_counter()
        await self.ws.send(json.dumps(msg))
        return self.next_id, t0

    async def start(self) -> dict:
        await self.until(lambda m: m["type"] == "hello")
        _, snap, _ = await self.until(lambda m: m["type"] == "snapshot")
        return snap

    async def subscribe_root(self) -> None:
        await self.send("subscribe", tables=[ROOT_TABLE])
        # (answered to this viewer alone: docs/protocol.md, `tables`)
        _, m, _ = await self.until(lambda m: m["type"] == "tables" and ROOT_TABLE in m["tables"])
        self._last_tables = dict(m["tables"])

    async def expand_down(self) -> list[str]:
        """Subscribe the start-level table and, as a user expanding the tree does, the
        first table below each, down to a level-3 table; the tables subscribed."""
        await self.subscribe_root()
        table, opened = ROOT_TABLE, [ROOT_TABLE]
        while True:
            rows = self._last_tables[table]["rows"]
            below = next((r for r in rows if r["decoded"]["type"] == "table"), None)
            if below is None:
                return opened
            table = below["decoded"]["next_table"]
            await self.send("subscribe", tables=[table])
            _, m, _ = await self.until(
                lambda m, t=table: m["type"] == "tables" and t in m["tables"]
            )
            self._last_tables.update(m["tables"])
            opened.append(table)

    async def close(self) -> None:
        await self.ws.close()


# --- 1. latency ----------------------------------------------------------------------------


@dataclass
class Latency:
    mode: str
    leaves: int
    echo: Dist  # websocket round trip answered by the consumer (no layer, no engine)
    ack: Dist  # step sent -> ack received
    delta: Dist  # step sent -> its delta received


async def _latency(dep: Deployment, leaves: int, cfg: Config) -> Latency:
    data = dep.create(wp_scenario(leaves))
    c = await Client.open(data["ws"], dep.url)
    await c.start()
    await c.subscribe_root()
    echo, acks, deltas = [], [], []
    for k in range(cfg.warmup + cfg.latency_steps):
        id_, t0 = await c.send("no-such-command")
        t1, _, _ = await c.until(lambda m, i=id_: m["type"] == "error" and m.get("id") == i)
        if k >= cfg.warmup:
            echo.append(t1 - t0)
    for position in range(1, cfg.warmup + cfg.latency_steps + 1):
        id_, t0 = await c.send("step", actor="host0")
        t_ack, _, _ = await c.until(lambda m, i=id_: m["type"] == "ack" and m.get("id") == i)
        t_delta, _, _ = await c.until(
            lambda m, p=position: m["type"] == "delta" and m.get("position") == p
        )
        if position > cfg.warmup:
            acks.append(t_ack - t0)
            deltas.append(t_delta - t0)
    await c.close()
    return Latency(dep.mode, leaves, Dist.of(echo), Dist.of(acks), Dist.of(deltas))


# --- 2. throughput -------------------------------------------------------------------------


@dataclass
class Throughput:
    mode: str
    leaves: int
    seconds: float  # from `run` sent to the last delta counted
    changes: int  # descriptor changes the client learned of (root counters)
    steps: int  # micro-steps decided (delta positions)
    events: int  # events the deltas covered (listed + omitted)
    listed: int  # events listed in the deltas
    deltas: int
    bytes: int
    max_gap_ms: float  # the longest wait between two deltas
    tables: int = 1  # tables the client has open (the start level down to a level-3 one)
    rss_growth_mb: float = 0.0  # the engine workers' resident memory, after - before
    db_growth_mb: float = 0.0  # the SQLite file(s), after - before

    @property
    def changes_per_s(self) -> float:
        return self.changes / self.seconds

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    def as_json(self) -> dict:
        return {
            **asdict(self),
            "changes_per_s": self.changes_per_s,
            "steps_per_s": self.steps_per_s,
            "events_per_s": self.events / self.seconds,
            "deltas_per_s": self.deltas / self.seconds,
            "bytes_per_s": self.bytes / self.seconds,
            "bytes_per_delta": self.bytes / max(1, self.deltas),
        }


async def _throughput(dep: Deployment, leaves: int, cfg: Config) -> Throughput:
    data = dep.create(wp_scenario(leaves))
    c = await Client.open(data["ws"], dep.url)
    snap = await c.start()
    opened = await c.expand_down()
    rss, db = dep.engine_rss_mb(), dep.db_mb()
    _, sent = await c.send("run", speed=0)
    first = None  # (time, readonly, position): when `run` was sent, the state before it
    last = None
    events = listed = deltas = size = 0
    gaps: list[float] = []
    prev_t = None
    while True:
        t, m, n = await c.until(lambda m: m["type"] == "delta", timeout=120)
        counts = (m.get("machine") or {}).get("counts")
        if first is None:
            # (the run command's own delta says running: a fast run may end in the next)
            if m.get("running"):
                first = (sent, snap["machine"]["counts"]["readonly"], snap["position"])
                prev_t = t
            continue
        if counts is not None:
            gaps.append(t - prev_t)
            prev_t = t
            last = (t, counts["readonly"], m["position"])
            events += len(m.get("events") or []) + m.get("omitted", 0)
            listed += len(m.get("events") or [])
            deltas += 1
            size += n
        if not m.get("running") or t - first[0] >= cfg.throughput_seconds:
            break
    if m.get("running"):
        await c.send("pause")
        with contextlib.suppress(TimeoutError):
            await c.until(lambda m: m["type"] == "delta" and m.get("running") is False, timeout=30)
    await c.close()
    if last is None:
        raise RuntimeError("the run sent no deltas")
    return Throughput(
        dep.mode,
        leaves,
        last[0] - first[0],
        last[1] - first[1],
        last[2] - first[2],
        events,
        listed,
        deltas,
        size,
        max(gaps) * 1000 if gaps else 0.0,
        len(opened),
        dep.engine_rss_mb() - rss,
        dep.db_mb() - db,
    )


# --- 3. first render -----------------------------------------------------------------------

RENDER_PROBE = """
((leaves, leaf) => {
  const t = (window.__ptvizBench = {});
  const W = window.WebSocket;
  window.WebSocket = class extends W {
    constructor(...args) {
      super(...args);
      t.wsCreated ??= performance.now();
      this.addEventListener("open", () => (t.wsOpen ??= performance.now()));
      this.addEventListener("message", (ev) => {
        if (t.rendered) return; // (a page measured afterwards runs without this probe)
        const now = performance.now();
        // (the message's own "type": the first one before any nested object)
        const type = (/^\\{[^{]*?"type":\\s*"([a-z_]+)"/.exec(ev.data) || [])[1];
        if (type) t[type] ??= now;
        if (/"tables":\\s*\\{"0x/.test(ev.data)) t.rootTable ??= now; // (the first table)
        (t.log ??= []).push([type, Math.round(now), ev.data.length]);
      });
    }
  };
  const check = () => {
    if (t.rendered) return;
    const root = document.querySelector(".tree-space .tr.root .counts");
    if (!root || !root.textContent.includes(leaves)) return;
    if (!document.querySelector(".tree-space .tr.row")) return;
    if (leaf) {
      // leaf rows of a level-3 table inside the tree's viewport (below its header); the
      // layout is read only once there are some (reading it forces one)
      let vp = null;
      let n = 0;
      for (const r of document.querySelectorAll(".tree-space .tr.row")) {
        if (r.querySelector(".c-lvl")?.textContent !== "L3") continue;
        if (r.querySelector(".f-type")?.textContent !== "page") continue;
        vp ??= document.querySelector(".tree-vp").getBoundingClientRect();
        const b = r.getBoundingClientRect();
        if (b.bottom > vp.top + 22 && b.top < vp.bottom) n++;
      }
      if (!n) return;
      t.leafRows = n;
    }
    t.rendered = performance.now();
  };
  new MutationObserver(check).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
})(LEAVES, LEAF);
"""


@dataclass
class Render:
    mode: str
    leaves: int
    kind: str  # cold | warm
    total_ms: float  # navigation start -> root row with counters and start-level rows
    # (opens "leaf": and leaf rows of a level-3 table on screen)
    response_ms: float  # the HTML's responseEnd
    dom_ms: float  # DOMContentLoaded done (modules loaded and run)
    hello_ms: float
    snapshot_ms: float
    root_table_ms: float  # the first message that carries a table (subscribe's answer)
    opens: str = "root"  # root: the page as created | leaf: a link to a leaf descriptor
    leaf_rows: int = 0  # level-3 leaf rows on screen at `total_ms`
    tables_ms: float = float("nan")  # the first `tables` message (a subscribe's answer)


RENDER_TIMEOUT_MS = 20_000


def _render_once(
    page, url: str, leaves: int, mode: str, kind: str, reload: bool, opens: str = "root"
) -> Render:
    if reload:
        page.reload(wait_until="commit")
    else:
        page.goto(url, wait_until="commit")
    try:
        page.wait_for_function(
            "() => window.__ptvizBench && window.__ptvizBench.rendered",
            timeout=RENDER_TIMEOUT_MS,
        )
    except Exception:  # (playwright's TimeoutError) never shown: not a figure
        t = page.evaluate("() => window.__ptvizBench")
        t["rendered"] = float("inf")
    else:
        t = page.evaluate("() => window.__ptvizBench")
    nav = page.evaluate(
        "() => { const n = performance.getEntriesByType('navigation')[0]; return {r: n.responseEnd, d: n.domContentLoadedEventEnd}; }"
    )
    return Render(
        mode,
        leaves,
        kind,
        t["rendered"],
        nav["r"],
        nav["d"],
        t.get("hello", float("nan")),
        t.get("snapshot", float("nan")),
        t.get("rootTable", float("nan")),
        opens,
        t.get("leafRows", 0),
        t.get("tables", float("nan")),
    )


def leaf_url(url: str, addr: str) -> str:
    """The session page's link with a descriptor selected (docs/protocol.md, `d`)."""
    return f"{url}{'&' if '?' in url else '?'}d={addr}"


def _probe_context(browser, leaves: int, leaf: bool):
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    label = f"{leaves:,} {'leaf' if leaves == 1 else 'leaves'}"
    ctx.add_init_script(
        RENDER_PROBE.replace("LEAVES", json.dumps(label)).replace("LEAF", json.dumps(leaf))
    )
    return ctx


def measure_render(dep: Deployment, cfg: Config, browser, leaf: str) -> list[Render]:
    out: list[Render] = []
    wp = wp_scenario(cfg.render_leaves)
    for leaves, scenario, opens in (
        (cfg.render_leaves, wp, "leaf"),
        (cfg.render_leaves, wp, "root"),
        (1, (ROOT / "scenarios" / "seed_race_seed.toml").read_text(), "root"),
    ):
        for _ in range(cfg.render_reps):
            data = dep.create(scenario)
            url = leaf_url(data["url"], leaf) if opens == "leaf" else data["url"]
            ctx = _probe_context(browser, leaves, opens == "leaf")
            page = ctx.new_page()
            out.append(_render_once(page, url, leaves, dep.mode, "cold", False, opens))
            out.append(_render_once(page, url, leaves, dep.mode, "warm", True, opens))
            ctx.close()
    return out


# --- 4. the browser's main thread during a full-speed run ------------------------------------


@dataclass
class MainThread:
    mode: str
    leaves: int
    state: str  # idle | running
    seconds: float  # wall time between the two samples
    task_s: float  # main-thread task time (TaskDuration) in that time
    script_s: float
    layout_s: float
    style_s: float
    changes: int  # descriptor changes the page learned of (its root counters)
    leaf_rows: int  # level-3 leaf rows in the tree's DOM at the end
    running: bool  # the run was still going at the end (the window saw only the run)

    @property
    def busy(self) -> float:
        return self.task_s / self.seconds

    def as_json(self) -> dict:
        return {**asdict(self), "busy": self.busy, "changes_per_s": self.changes / self.seconds}


def _metrics(cdp) -> dict:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def _page_readonly(page) -> int:
    return page.evaluate("() => window.ptviz.store.machine.counts.readonly")


def _window(page, cdp, seconds: float, mode: str, leaves: int, state: str) -> MainThread:
    """`seconds` of the page's main thread; a running window ends early when the run
    does (a 1M-leaf run now ends in about 2 s: the window sees only the run)."""
    m0, ro0, t0 = _metrics(cdp), _page_readonly(page), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        page.wait_for_timeout(100)
        if state == "running" and not page.evaluate("() => window.ptviz.store.running"):
            break
    m1, ro1, t1 = _metrics(cdp), _page_readonly(page), time.perf_counter()
    rows = page.evaluate(
        "() => [...document.querySelectorAll('.tree-space .tr.row .c-lvl')]"
        ".filter((e) => e.textContent === 'L3').length"
    )
    running = page.evaluate("() => window.ptviz.store.running")

    def d(key: str) -> float:
        return m1.get(key, 0.0) - m0.get(key, 0.0)

    return MainThread(
        mode,
        leaves,
        state,
        t1 - t0,
        d("TaskDuration"),
        d("ScriptDuration"),
        d("LayoutDuration"),
        d("RecalcStyleDuration"),
        ro1 - ro0,
        rows,
        running,
    )


def measure_mainthread(dep: Deployment, cfg: Config, browser, leaf: str) -> list[MainThread]:
    """The 1M-leaf wp opened at its first leaf (a level-3 table expanded); the page's
    main thread idle, then during a run at speed 0 started from the page."""
    leaves = cfg.render_leaves
    data = dep.create(wp_scenario(leaves))
    ctx = _probe_context(browser, leaves, True)
    page = ctx.new_page()
    try:
        page.goto(leaf_url(data["url"], leaf), wait_until="commit")
        rendered = "() => window.__ptvizBench && window.__ptvizBench.rendered"
        try:
            page.wait_for_function(rendered, timeout=RENDER_TIMEOUT_MS)
        except Exception:  # the link did not open the level-3 table: open it as a click would
            page.evaluate(
                "([addr, ipa]) => window.ptviz.tree.revealDescriptor(addr, ipa, 3)",
                [leaf, hex(BASE_IPA)],
            )
            page.wait_for_function(rendered, timeout=60_000)
        page.wait_for_timeout(500)  # (the first paints and subscriptions settle)
        cdp = ctx.new_cdp_session(page)
        cdp.send("Performance.enable")  # (task durations in wall time)
        idle = _window(page, cdp, cfg.mainthread_seconds, dep.mode, leaves, "idle")
        page.evaluate("() => window.ptviz.conn.command('run', {speed: 0})")
        page.wait_for_function("() => window.ptviz.store.machine.counts.readonly > 0")
        page.wait_for_timeout(300)  # (past the run's first deltas)
        running = _window(page, cdp, cfg.mainthread_seconds, dep.mode, leaves, "running")
        page.evaluate("() => window.ptviz.conn.command('pause')")
    finally:
        ctx.close()
    return [idle, running]


def render_summary(rows: list[Render]) -> list[dict]:
    """Median per (mode, leaves, kind)."""
    groups: dict[tuple, list[Render]] = {}
    for r in rows:
        groups.setdefault((r.mode, r.leaves, r.opens, r.kind), []).append(r)
    out = []
    for (mode, leaves, opens, kind), rs in groups.items():

        def med(f, rs=rs):
            return statistics.median(getattr(r, f) for r in rs)

        out.append(
            {
                "mode": mode,
                "leaves": leaves,
                "opens": opens,
                "kind": kind,
                "reps": len(rs),
                **{
                    f: med(f)
                    for f in (
                        "total_ms",
                        "response_ms",
                        "dom_ms",
                        "hello_ms",
                        "snapshot_ms",
                        "root_table_ms",
                        "tables_ms",
                    )
                },
                "leaf_rows": min(r.leaf_rows for r in rs),
                "best_total_ms": min(r.total_ms for r in rs),
            }
        )
    return out


# --- baselines (in this process: no server, no database) ------------------------------------


@dataclass
class EngineBaseline:
    leaves: int
    what: str
    steps: int
    changes: int
    seconds: float
    rss_growth_mb: float = 0.0  # this process's resident memory, after - before

    def as_json(self) -> dict:
        return {
            **asdict(self),
            "steps_per_s": self.steps / self.seconds,
            "changes_per_s": self.changes / self.seconds,
        }


def _readonly(live) -> int:
    return live.machine_view()["counts"]["readonly"]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def engine_baselines(leaves: int, cfg: Config) -> list[EngineBaseline]:
    """The same wp run: the core alone, LiveSession.step, SessionHost's run slices (no
    transport, no database), with the LiveSession's checkpoints and without them."""
    from engine.core import machine_class
    from engine.session import LiveSession
    from ptviz.engine_worker.host import SessionHost

    text = wp_scenario(leaves)
    out = []
    # the core alone, the whole run (no decisions recorded, no checkpoints)
    live = LiveSession(text)
    machine = machine_class("cython")(live.spec)
    t0 = time.perf_counter()
    steps = machine.run_round_robin()
    seconds = time.perf_counter() - t0
    out.append(EngineBaseline(leaves, "core: Machine.run_round_robin()", steps, leaves, seconds))
    del machine, live
    gc.collect()

    for every, label in ((256, "checkpoints as served"), (10**12, "no checkpoints")):
        rss = _rss_mb()
        live = LiveSession(text, snapshot_every=every)
        before = _readonly(live)
        t0 = time.perf_counter()
        steps = 0
        while time.perf_counter() - t0 < cfg.baseline_seconds and not live.machine.all_done():
            for _ in range(256):
                if live.machine.done(0):
                    break
                live.step(0)
                steps += 1
            live.machine.clear_events()
        seconds = time.perf_counter() - t0
        out.append(
            EngineBaseline(
                leaves,
                f"LiveSession.step, {label}",
                steps,
                _readonly(live) - before,
                seconds,
                _rss_mb() - rss,
            )
        )
        del live
        gc.collect()

        rss = _rss_mb()
        live = LiveSession(text, snapshot_every=every)
        before = _readonly(live)
        host = SessionHost("bench", live, set(), lambda *a: None, persist=False)
        host.join("viewer", [ROOT_TABLE], reply=False)
        host.command({"cmd": "run", "id": 1, "speed": 0}, "viewer")
        t0 = time.perf_counter()
        start = live.position
        while time.perf_counter() - t0 < cfg.baseline_seconds and host.run is not None:
            host.tick()
        seconds = time.perf_counter() - t0
        out.append(
            EngineBaseline(
                leaves,
                f"SessionHost run slices, {label}",
                live.position - start,
                _readonly(live) - before,
                seconds,
                _rss_mb() - rss,
            )
        )
        del host, live
        gc.collect()
    return out


@dataclass
class Costs:
    leaves: int
    state_bytes: int
    pack_ms: float
    hash_ms: float
    compress_ms: float
    compressed_bytes: int
    interval: int  # decisions between two checkpoints (LiveSession.interval as served)
    delta_events: int
    delta_build_ms: float  # SessionHost.flush(): event_json, views, counters
    delta_json_ms: float  # json.dumps of that delta (the consumer does it per viewer)
    delta_bytes: int


def whole(payload: dict) -> dict:
    """The message of an emitted layer payload; a group delta is sent JSON-encoded once
    (its text, and each table's: SessionHost.to_group_encoded): decoded whole again."""
    if "text" not in payload:
        return payload["msg"]
    msg = json.loads(payload["text"])
    msg["tables"] = {pa: json.loads(v) for pa, v in payload.get("tables", {}).items()}
    return msg


def measure_costs(leaves: int) -> Costs:
    """One LiveSession checkpoint and one full delta of a fast run, timed apart."""
    from engine.session import LiveSession
    from engine.snapshot import pack, state_hash
    from ptviz.engine_worker.host import SessionHost
    from ptviz.engine_worker.store import compress

    live = LiveSession(wp_scenario(leaves), snapshot_every=10**12)

    def best(fn, reps=5):
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return min(times) * 1000, value

    pack_ms, data = best(lambda: pack(live.machine.get_state()))
    hash_ms, _ = best(lambda: state_hash(data))
    compress_ms, blob = best(lambda: compress(data))
    sent: list[dict] = []
    host = SessionHost("bench", live, set(), lambda k, t, p: sent.append(whole(p)), persist=False)
    host.join("viewer", [ROOT_TABLE], reply=False)
    builds = []
    for _ in range(5):
        for _ in range(3000):
            live.step(0)
        host._drain()
        t0 = time.perf_counter()
        host.flush()
        builds.append(time.perf_counter() - t0)
    msg = sent[-1]
    json_ms, text = best(lambda: json.dumps(msg, separators=(",", ":")))
    return Costs(
        leaves,
        len(data),
        pack_ms,
        hash_ms,
        compress_ms,
        len(blob),
        LiveSession(wp_scenario(leaves)).interval,
        len(msg["events"]) + msg.get("omitted", 0),
        min(builds) * 1000,
        json_ms,
        len(text),
    )


@dataclass
class LayerTrip:
    layer: str
    message: str
    bytes: int
    dist: Dist


async def _layer_trips(redis: bool, delta: dict, reps: int) -> list[LayerTrip]:
    from channels.layers import InMemoryChannelLayer
    from channels_redis.core import RedisChannelLayer

    from ptviz import layers

    out = []
    small = {"type": "ptviz.out", "msg": {"v": 1, "type": "ack", "id": 1}}
    big = {"type": "ptviz.out", "msg": delta}
    kinds = [
        ("in-memory", lambda: InMemoryChannelLayer(**layers.inmemory_layers()["default"]["CONFIG"]))
    ]
    prefix = f"ptviz-bench-{uuid.uuid4().hex[:10]}:"
    if redis:
        cfg = layers.redis_layers(REDIS_URL, prefix)["default"]["CONFIG"]
        kinds.append(("redis", lambda: RedisChannelLayer(**cfg)))
    for name, make in kinds:
        layer = make()
        channel = await layer.new_channel("bench")
        for label, payload in (("ack", small), ("delta", big)):
            times = []
            for k in range(reps + 10):
                t0 = time.perf_counter()
                await layer.send(channel, payload)
                await layer.receive(channel)
                if k >= 10:
                    times.append(time.perf_counter() - t0)
            size = len(json.dumps(payload["msg"], separators=(",", ":")))
            out.append(LayerTrip(name, label, size, Dist.of(times)))
        close = getattr(layer, "close_pools", None)
        if close is not None:
            await close()
    if redis:
        flush_redis_prefix(prefix)
    return out


def step_cost(leaves: int, n: int) -> Dist:
    """SessionHost.command(step) in-process (no database write, no transport): the
    engine's share of a step's latency."""
    from engine.session import LiveSession
    from ptviz.engine_worker.host import SessionHost

    live = LiveSession(wp_scenario(leaves))
    host = SessionHost("bench", live, set(), lambda *a: None, persist=False)
    host.join("viewer", [ROOT_TABLE], reply=False)
    times = []
    for k in range(n):
        t0 = time.perf_counter()
        host.command({"cmd": "step", "id": k, "actor": "host0"}, "viewer")
        times.append(time.perf_counter() - t0)
    return Dist.of(times)


@dataclass
class WorkerProfile:
    """Where an engine worker's time goes during a fast run: SessionHost with the real
    database writes (a temporary SQLite file), in a child process."""

    leaves: int
    seconds: float
    steps: int
    changes: int
    deltas: int
    step_s: float  # LiveSession.step without its checkpoints, and the run loop
    checkpoint_s: float  # LiveSession._checkpoint: pack + hash of the whole state
    persist_s: float  # store.append: compress the checkpoints, insert decisions + blobs
    compress_s: float  # (of which: compressing the checkpoints)
    delta_s: float  # flush() without persist: events to JSON, table views, counters
    encode_s: float  # what the transports then do per delta: pickle (embedded) + json

    def as_json(self) -> dict:
        return {
            **asdict(self),
            "steps_per_s": self.steps / self.seconds,
            "changes_per_s": self.changes / self.seconds,
        }


def worker_profile(leaves: int, seconds: float) -> WorkerProfile:
    """In a process whose DATABASE_URL is a temporary file (see profile_in_child)."""
    import pickle

    from django.core.management import call_command

    from engine.session import LiveSession
    from ptviz.debugger import records
    from ptviz.engine_worker import host as host_mod
    from ptviz.engine_worker import store

    call_command("migrate", interactive=False, verbosity=0)
    live = records.check_scenario(wp_scenario(leaves), "bench")
    session, _, _ = records.create(live, "bench")
    spent = {"checkpoint": 0.0, "persist": 0.0, "compress": 0.0, "flush": 0.0, "encode": 0.0}
    sent = [0]

    def timed(key, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - t0

        return wrapper

    def emit(kind, target, payload):
        t0 = time.perf_counter()
        pickle.dumps(payload)
        json.dumps(payload["msg"], separators=(",", ":"))
        spent["encode"] += time.perf_counter() - t0
        sent[0] += payload["msg"].get("type") == "delta"

    LiveSession._checkpoint = timed("checkpoint", LiveSession._checkpoint)
    store.compress = timed("compress", store.compress)
    h = host_mod.SessionHost.load(str(session.id), emit)
    h.persist = timed("persist", h.persist)
    inner_flush = h.flush

    def flush(*a, **k):
        before = spent["persist"]
        t0 = time.perf_counter()
        try:
            return inner_flush(*a, **k)
        finally:
            spent["flush"] += time.perf_counter() - t0 - (spent["persist"] - before)

    h.flush = flush
    # the tables down to the first leaf open, as the throughput client has them
    h.join("viewer", [hex(pa) for pa in h.index.path(int(first_leaf(leaves), 16))], reply=False)
    start_ro = _readonly(h.live)
    start_pos = h.live.position
    for key in spent:
        spent[key] = 0.0
    sent[0] = 0
    h.command({"cmd": "run", "id": 1, "speed": 0}, "viewer")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds and h.run is not None:
        h.tick()
    total = time.perf_counter() - t0
    other = total - spent["checkpoint"] - spent["persist"] - spent["flush"] - spent["encode"]
    return WorkerProfile(
        leaves,
        total,
        h.live.position - start_pos,
        _readonly(h.live) - start_ro,
        sent[0],
        other,
        spent["checkpoint"],
        spent["persist"],
        spent["compress"],
        spent["flush"],
        spent["encode"],
    )


def profile_in_child(leaves: int, seconds: float) -> WorkerProfile:
    tmp = Path(tempfile.mkdtemp(prefix="ptviz-webbench-profile-"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}", DJANGO_SETTINGS_MODULE="ptviz.settings"
    )
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.web",
                "--worker-profile",
                str(leaves),
                "--seconds",
                str(seconds),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data = json.loads(out)
    return WorkerProfile(**{k: data[k] for k in WorkerProfile.__dataclass_fields__})


# --- the run -------------------------------------------------------------------------------


@dataclass
class Results:
    config: Config
    host: dict
    modes: list[str]
    latency: list[Latency] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    render: list[Render] = field(default_factory=list)
    mainthread: list[MainThread] = field(default_factory=list)
    engine: list[EngineBaseline] = field(default_factory=list)
    costs: list[Costs] = field(default_factory=list)
    layer: list[LayerTrip] = field(default_factory=list)
    step_cost: dict = field(default_factory=dict)
    workers: list[WorkerProfile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "config": asdict(self.config),
            "host": self.host,
            "modes": self.modes,
            "latency": [asdict(x) for x in self.latency],
            "throughput": [x.as_json() for x in self.throughput],
            "render": [asdict(x) for x in self.render],
            "render_summary": render_summary(self.render),
            "mainthread": [x.as_json() for x in self.mainthread],
            "baselines": {
                "engine": [x.as_json() for x in self.engine],
                "costs": [asdict(x) for x in self.costs],
                "layer": [asdict(x) for x in self.layer],
                "step": {str(k): asdict(v) for k, v in self.step_cost.items()},
                "worker_profile": [x.as_json() for x in self.workers],
            },
            "targets": {
                "changes_per_s": TARGET_CHANGES,
                "render_ms": TARGET_RENDER_MS,
                "leaf_render_ms": TARGET_LEAF_RENDER_MS,
                "busy": TARGET_BUSY,
            },
            "notes": self.notes,
        }


def arun(coro):
    """asyncio.run in a thread of its own: Playwright's sync API keeps an event loop
    running in this one."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(
    cfg: Config, *, redis: bool = True, browser: bool = True, only: tuple[str, ...] = SECTIONS
) -> Results:
    modes = ["embedded"]
    notes = []
    if redis:
        if redis_up():
            modes.append("redis")
        else:
            notes.append(f"Redis is not running on {REDIS_HOST}:{REDIS_PORT}: redis mode skipped")
    r = Results(cfg, host_info(), modes, notes=notes)

    pw = chromium = None
    leaf = None
    if browser and {"render", "mainthread"} & set(only):
        leaf = first_leaf(cfg.render_leaves)
        if not os.access(CHROMIUM, os.X_OK):
            notes.append(f"no Chromium at {CHROMIUM}: first render skipped")
        else:
            from playwright.sync_api import sync_playwright

            pw = sync_playwright().start()
            chromium = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
    try:
        for mode in modes:
            log(f"webbench: starting the {mode} deployment…")
            dep = Deployment(mode).start()
            try:
                if chromium is not None and "render" in only:
                    log(f"webbench: {mode}: first render in Chromium…")
                    r.render += measure_render(dep, cfg, chromium, leaf)
                if chromium is not None and "mainthread" in only:
                    log(f"webbench: {mode}: the page's main thread during a run…")
                    r.mainthread += measure_mainthread(dep, cfg, chromium, leaf)
                for leaves in cfg.latency_sizes if "latency" in only else ():
                    log(f"webbench: {mode}: step latency, {leaves:,} leaves…")
                    r.latency.append(arun(_latency(dep, leaves, cfg)))
                for leaves in cfg.throughput_sizes if "throughput" in only else ():
                    log(f"webbench: {mode}: run throughput, {leaves:,} leaves…")
                    r.throughput.append(arun(_throughput(dep, leaves, cfg)))
            finally:
                dep.stop()
    finally:
        if chromium is not None:
            chromium.close()
        if pw is not None:
            pw.stop()

    if "baselines" not in only:
        return r
    log("webbench: baselines in-process (core, LiveSession, SessionHost, checkpoint, delta)…")
    for leaves in cfg.throughput_sizes:
        r.engine += engine_baselines(leaves, cfg)
        r.costs.append(measure_costs(leaves))
        log(f"webbench: worker profile with the database, {leaves:,} leaves…")
        r.workers.append(profile_in_child(leaves, cfg.baseline_seconds))
    for leaves in cfg.latency_sizes:
        r.step_cost[leaves] = step_cost(leaves, cfg.warmup + cfg.latency_steps)
    from engine.session import LiveSession
    from ptviz.engine_worker.host import SessionHost

    sent: list[dict] = []
    live = LiveSession(wp_scenario(cfg.throughput_sizes[0]), snapshot_every=10**12)
    host = SessionHost("bench", live, set(), lambda k, t, p: sent.append(whole(p)), persist=False)
    host.join("viewer", [ROOT_TABLE], reply=False)
    for _ in range(3000):
        live.step(0)
    host._drain()
    host.flush()
    r.layer = arun(_layer_trips("redis" in modes, sent[-1], cfg.layer_reps))
    return r


# --- the report ----------------------------------------------------------------------------


def _ms(v: float) -> str:
    return f"{v:,.2f}" if v < 10 else f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def render_report(r: Results) -> str:
    out = [
        f"ptviz web benchmarks ({r.host['cpu']}, {r.host['cpus']} CPUs, Python "
        f"{r.host['python']}); deployments: {', '.join(r.modes)}"
    ]
    out += [f"  note: {n}" for n in r.notes]
    if r.latency:
        out += [
            "",
            "1. Step latency: `step` command sent -> ack / delta received by the same websocket",
            "   client (ms). echo: a command the consumer refuses itself (daphne + consumer, no",
            "   channel layer, no engine): the floor of any websocket round trip.",
            format_table(
                ["mode", "leaves", "echo p50", "p99", "ack p50", "p99", "delta p50", "p99", "max"],
                [
                    [
                        x.mode,
                        f"{x.leaves:,}",
                        _ms(x.echo.p50_ms),
                        _ms(x.echo.p99_ms),
                        _ms(x.ack.p50_ms),
                        _ms(x.ack.p99_ms),
                        _ms(x.delta.p50_ms),
                        _ms(x.delta.p99_ms),
                        _ms(x.delta.max_ms),
                    ]
                    for x in r.latency
                ],
            ),
        ]
        if r.step_cost:
            out += [
                "   baseline, the engine's share: SessionHost.command(step) in-process, no database",
                "   write, no transport:  "
                + ";  ".join(
                    f"{k:,} leaves p50 {_ms(v.p50_ms)} ms p99 {_ms(v.p99_ms)} ms max {_ms(v.max_ms)} ms"
                    for k, v in r.step_cost.items()
                ),
            ]
        if r.layer:
            out += [
                "   baseline, the channel layer alone (in-process send + receive, ms):  "
                + ";  ".join(
                    f"{x.layer} {x.message} ({x.bytes:,} B) p50 {_ms(x.dist.p50_ms)} p99 {_ms(x.dist.p99_ms)}"
                    for x in r.layer
                )
            ]
    if r.throughput:
        out += [
            "",
            "2. Sustained run (speed 0), host0 `wp` over N 4K leaves (seed: one descriptor change",
            "   per leaf, 3 micro-steps), one websocket client with the tree expanded down to a",
            "   level-3 table (the start-level table and one table of each level below it open).",
            "   changes/s: descriptor changes the client learns of (root counters in the deltas);",
            f"   target {TARGET_CHANGES:,}/s. +RSS / +DB: what the engine workers' memory and the SQLite file\n   grew by during the run.",
            format_table(
                [
                    "mode",
                    "leaves",
                    "seconds",
                    "changes/s",
                    "steps/s",
                    "events/s",
                    "deltas/s",
                    "KB/delta",
                    "MB/s",
                    "max gap ms",
                    "+RSS MB",
                    "+DB MB",
                    "target",
                ],
                [
                    [
                        x.mode,
                        f"{x.leaves:,}",
                        f"{x.seconds:.2f}",
                        format_rate(x.changes_per_s),
                        format_rate(x.steps_per_s),
                        format_rate(x.events / x.seconds),
                        f"{x.deltas / x.seconds:.1f}",
                        f"{x.bytes / max(1, x.deltas) / 1024:,.0f}",
                        f"{x.bytes / x.seconds / 1e6:.2f}",
                        f"{x.max_gap_ms:,.0f}",
                        f"{x.rss_growth_mb:,.0f}",
                        f"{x.db_growth_mb:,.0f}",
                        f"{x.changes_per_s / TARGET_CHANGES:.0%}",
                    ]
                    for x in r.throughput
                ],
            ),
        ]
    if r.engine:
        out += [
            "   baselines in-process, the same wp (no server, no database, no transport):",
            format_table(
                ["leaves", "what", "steps/s", "changes/s", "+RSS MB"],
                [
                    [
                        f"{x.leaves:,}",
                        x.what,
                        format_rate(x.steps / x.seconds),
                        format_rate(x.changes / x.seconds),
                        f"{x.rss_growth_mb:,.0f}" if "core" not in x.what else "",
                    ]
                    for x in r.engine
                ],
            ),
        ]
    if r.costs:
        out += [
            "   what one LiveSession checkpoint (a full machine state, every `interval` decisions) and",
            "   one delta of a fast run cost, in-process (ms):",
            format_table(
                [
                    "leaves",
                    "state MB",
                    "pack",
                    "hash",
                    "compress",
                    "stored MB",
                    "per 1k steps",
                    "delta events",
                    "build",
                    "json",
                    "delta KB",
                ],
                [
                    [
                        f"{c.leaves:,}",
                        f"{c.state_bytes / 1e6:.1f}",
                        _ms(c.pack_ms),
                        _ms(c.hash_ms),
                        _ms(c.compress_ms),
                        f"{c.compressed_bytes / 1e6:.2f}",
                        _ms((c.pack_ms + c.hash_ms + c.compress_ms) * 1000 / c.interval),
                        f"{c.delta_events:,}",
                        _ms(c.delta_build_ms),
                        _ms(c.delta_json_ms),
                        f"{c.delta_bytes / 1024:,.0f}",
                    ]
                    for c in r.costs
                ],
            ),
            "   (per 1k steps: pack + hash + compress of the checkpoints 1,000 decisions make,",
            "   one every `interval`; the worker also stores each compressed one in the database)",
        ]
    if r.workers:
        out += [
            "   where a worker's time goes in the same run (SessionHost with its real database",
            "   writes to a temporary SQLite file, in a child process, the tables down to a leaf",
            "   open; % of the wall time):",
            format_table(
                [
                    "leaves",
                    "steps/s",
                    "changes/s",
                    "steps+loop",
                    "checkpoints",
                    "persist",
                    "(compress)",
                    "delta build",
                    "encode",
                ],
                [
                    [
                        f"{w.leaves:,}",
                        format_rate(w.steps / w.seconds),
                        format_rate(w.changes / w.seconds),
                        f"{w.step_s / w.seconds:.0%}",
                        f"{w.checkpoint_s / w.seconds:.0%}",
                        f"{w.persist_s / w.seconds:.0%}",
                        f"{w.compress_s / w.seconds:.0%}",
                        f"{w.delta_s / w.seconds:.0%}",
                        f"{w.encode_s / w.seconds:.0%}",
                    ]
                    for w in r.workers
                ],
            ),
            "   (persist: Decision rows (runs of steps packed in one) and compressed checkpoints in one",
            "   transaction per delta; compress: in the packer thread, beside the run; encode:",
            "   pickle for the embedded queue + the consumer's JSON)",
        ]
    if r.render:
        rows = render_summary(r.render)
        out += [
            "",
            "3. First render in headless Chromium: navigation start -> the tree shows the root",
            f"   row with its counters and the start-level rows (ms, median of {r.config.render_reps});",
            f"   cold: the worker loads the session from the database; warm: a reload. Target {TARGET_RENDER_MS:,} ms.",
            "   opens leaf: a link to the first leaf (`?d=`), rendered once leaf rows of its level-3",
            f"   table are on screen; target {TARGET_LEAF_RENDER_MS:,} ms cold. tables: the first `tables` message.",
            format_table(
                [
                    "mode",
                    "leaves",
                    "opens",
                    "kind",
                    "HTML",
                    "DOMContentLoaded",
                    "hello",
                    "snapshot",
                    "1st table",
                    "tables",
                    "rendered",
                    "best",
                    "L3 rows",
                    "target",
                ],
                [
                    [
                        x["mode"],
                        f"{x['leaves']:,}",
                        x["opens"],
                        x["kind"],
                        _ms(x["response_ms"]),
                        _ms(x["dom_ms"]),
                        _ms(x["hello_ms"]),
                        _ms(x["snapshot_ms"]),
                        _ms(x["root_table_ms"]),
                        _ms(x["tables_ms"]),
                        _ms(x["total_ms"]),
                        _ms(x["best_total_ms"]),
                        str(x["leaf_rows"]) if x["opens"] == "leaf" else "",
                        _render_verdict(x),
                    ]
                    for x in rows
                ],
            ),
            "   (the 1-leaf rows are the baseline: the same page and protocol on a tiny session;",
            f"   inf: not rendered within {RENDER_TIMEOUT_MS / 1000:.0f} s)",
        ]
    if r.mainthread:
        out += [
            "",
            f"4. The page's main thread, the {r.mainthread[0].leaves:,}-leaf wp opened at its first leaf (a level-3 table",
            "   expanded): share of the wall time spent in tasks (Chromium TaskDuration via CDP), of",
            "   which script, layout and style; changes/s the page's store learned of. The idle row is",
            f"   the baseline (same page, session not running). Target: under {TARGET_BUSY:.0%} busy while running.",
            format_table(
                [
                    "mode",
                    "leaves",
                    "state",
                    "seconds",
                    "busy",
                    "script",
                    "layout",
                    "style",
                    "changes/s",
                    "L3 rows",
                    "target",
                ],
                [
                    [
                        x.mode,
                        f"{x.leaves:,}",
                        x.state + ("" if x.state == "idle" or x.running else " (ended)"),
                        f"{x.seconds:.2f}",
                        f"{x.busy:.0%}",
                        f"{x.script_s / x.seconds:.0%}",
                        f"{x.layout_s / x.seconds:.0%}",
                        f"{x.style_s / x.seconds:.0%}",
                        format_rate(x.changes / x.seconds),
                        str(x.leaf_rows),
                        "" if x.state == "idle" else "ok" if x.busy < TARGET_BUSY else "MISSED",
                    ]
                    for x in r.mainthread
                ],
            ),
        ]
    return "\n".join(out)


def _render_verdict(x: dict) -> str:
    if x["leaves"] == 1:
        return ""
    if x["opens"] == "leaf":
        if x["kind"] != "cold":
            return ""
        return "ok" if x["total_ms"] < TARGET_LEAF_RENDER_MS else "MISSED"
    return "ok" if x["total_ms"] < TARGET_RENDER_MS else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.web",
        description="Benchmark the web debugger on real deployments: step latency over the "
        "websocket, sustained descriptor changes per second delivered to a client, first "
        "render of a 1M-leaf session in headless Chromium; each next to a baseline. Starts "
        "its own deployments (temporary SQLite files, free ports, a Redis prefix of their "
        "own) and never touches the project's database.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="tiny workloads (a smoke run)")
    parser.add_argument("--no-redis", action="store_true", help="embedded deployment only")
    parser.add_argument(
        "--no-browser", action="store_true", help="skip the first render and the main thread"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="serve the deployments on this port and the next ones (default: free ports)",
    )
    # internal: the worker profile runs in a child process on a temporary database
    parser.add_argument("--worker-profile", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_profile:
        if "DATABASE_URL" not in os.environ:
            parser.error("--worker-profile writes to DATABASE_URL: set a temporary one")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ptviz.settings")
        import django

        django.setup()
        print(json.dumps(worker_profile(args.worker_profile, args.seconds).as_json()))
        return 0
    # (the in-process baselines import SessionHost, whose store imports the models; no
    # database is touched: persist is off)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ptviz.settings")
    import django

    django.setup()
    cfg = QUICK if args.quick else Config()
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = [x for x in only if x not in SECTIONS]
    if unknown:
        parser.error(f"--only: no section {', '.join(unknown)} (sections: {', '.join(SECTIONS)})")
    if args.port:
        Deployment.ports = list(range(args.port, args.port + 10))
    results = run(cfg, redis=not args.no_redis, browser=not args.no_browser, only=only)
    print(json.dumps(results.to_json(), indent=1) if args.json else render_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

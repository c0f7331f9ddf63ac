"""Load benchmark of the web debugger (issue 9, "Load"): many viewers of one session, many
sessions running at once. `make bench-load` (`python -m bench.load [--viewers N]
[--sessions N] [--json]`).

It starts a deployment of its own (bench.web.Deployment: `serve` and two `engineworker`s on
Redis when Redis answers on 127.0.0.1:6379, else `serve` with two embedded engine worker
processes; a temporary SQLite file, free ports, a Redis prefix it removes) and measures:

1. one session, 1 viewer (the baseline), then N viewers (default 200) subscribed to the
   root table: the latency from a `step` sent by the control viewer to its delta at every
   viewer (p50/p99/max), server and worker memory per viewer, and batch gaps (missed
   sequence numbers) at every viewer;
2. K sessions (default 50), one viewer each, all running at once at a fixed speed: deltas
   per second delivered in total, how late each delta is against the pace (p50/p99),
   worker memory per session, batch gaps.

Bounded: every phase has a deadline; all processes are stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.web import Client, Deployment, Dist, wp_scenario
from ptviz.localservices import free_port, haproxy_config, redis_up

ROOT_TABLE = "0x1000000000"


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (what latency on a shared machine
    does not show: the fan-out's own cost)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_pids(dep: Deployment) -> list[int]:
    return [proc.pid for name, proc, _ in dep.procs if name.startswith("serve")]


def scale_out(dep: Deployment, servers: int) -> None:
    """README, "Deployment": `servers` web servers on the one Redis layer and database,
    behind haproxy (round robin); the deployment's URL becomes the balancer's."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(haproxy):
        raise SystemExit("--servers needs haproxy (apt-get install haproxy)")
    ports = [dep.port] + [free_port() for _ in range(servers - 1)]
    for k, port in enumerate(ports[1:], 1):
        dep._spawn(f"serve{k}", ["serve", "--no-migrate", "--port", str(port)])
    for port in ports[1:]:
        wait_http(f"http://127.0.0.1:{port}/")
    lb = free_port()
    cfg = dep.dir / "haproxy.cfg"
    cfg.write_text(haproxy_config(lb, ports))
    with open(dep.dir / "haproxy.log", "w") as out:
        proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=out, stderr=out)
    dep.procs.append(("haproxy", proc, dep.dir / "haproxy.log"))
    dep.port, dep.url = lb, f"http://127.0.0.1:{lb}"
    wait_http(dep.url + "/")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.1)


class Gaps:
    """Batch numbers seen by one viewer: a delta must be the next one after the last
    delta or snapshot (a gap is a missed sequence number)."""

    def __init__(self):
        self.last: int | None = None
        self.gaps = 0
        self.deltas = 0

    def see(self, msg: dict) -> None:
        if msg["type"] == "snapshot":
            self.last = msg["batch"]
        elif msg["type"] == "delta":
            self.deltas += 1
            if self.last is not None and msg["batch"] != self.last + 1:
                self.gaps += 1
            self.last = msg["batch"]


async def open_viewers(dep: Deployment, url: str, n: int) -> list[Client]:
    out: list[Client] = []
    for start in range(0, n, 25):  # in bursts of 25, as a page of tabs would
        batch = await asyncio.gather(
            *[Client.open(url, dep.url) for _ in range(min(25, n - start))]
        )
        await asyncio.gather(*[c.start() for c in batch])
        out.extend(batch)
    return out


async def subscribe(clients: list[Client]) -> None:
    for c in clients:
        await c.send("subscribe", tables=[ROOT_TABLE])
    await asyncio.gather(*[c.until(lambda m: m["type"] == "tables") for c in clients])


async def fan_out(dep: Deployment, viewers: int, steps: int) -> dict:
    """Step-to-delta at every viewer of one session."""
    data = dep.create(wp_scenario(4096))
    view_url = data["ws"].replace(
        data["url"].rstrip("/").rsplit("/", 1)[-1],
        data["links"]["view"].rstrip("/").rsplit("/", 1)[-1],
    )
    control = await Client.open(data["ws"], dep.url)
    await control.start()
    server0 = sum(map(rss_mb, serve_pids(dep)))
    workers0 = dep.engine_rss_mb()
    clients = await open_viewers(dep, view_url, viewers)
    await subscribe(clients)
    server1 = sum(map(rss_mb, serve_pids(dep)))
    workers1 = dep.engine_rss_mb()
    gaps = [Gaps() for _ in clients]
    lat: list[float] = []
    cpu0 = sum(map(cpu_s, serve_pids(dep)))

    async def wait_delta(c: Client, g: Gaps, decisions: int) -> float:
        while True:
            t, msg, _ = await c.recv(60)
            g.see(msg)
            if msg["type"] == "delta" and msg["decisions"] >= decisions:
                return t

    for k in range(steps):  # (wp_scenario's one actor: a host write-protecting every leaf)
        _id, t0 = await control.send("step", actor="host0")
        arrivals = await asyncio.gather(
            *[wait_delta(c, g, k + 1) for c, g in zip(clients, gaps, strict=True)]
        )
        lat.extend(t - t0 for t in arrivals)
        await control.until(lambda m: m["type"] == "delta")
        await asyncio.sleep(0.05)
    cpu1 = sum(map(cpu_s, serve_pids(dep)))
    for c in [control, *clients]:
        await c.close()
    return {
        "viewers": viewers,
        "steps": steps,
        "delta": Dist.of(lat).__dict__,
        "gaps": sum(g.gaps for g in gaps),
        # (with the viewers' heartbeats and checks meanwhile: part of what each costs)
        "server_cpu_us_per_viewer_delta": 1e6 * (cpu1 - cpu0) / (steps * max(1, viewers)),
        "server_mb_per_viewer": (server1 - server0) / max(1, viewers),
        "workers_mb_per_viewer": (workers1 - workers0) / max(1, viewers),
    }


RUN = """
name = "a long run"
kernel = "v6.6"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
count = 64
[[actor]]
name = "host0"
kind = "host"
do = [{ops}]
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = [{reads}]
"""


async def many_sessions(dep: Deployment, sessions: int, speed: float, steps: int) -> dict:
    """K sessions running at `speed` steps per second at once, one viewer each."""
    text = RUN.format(
        ops=", ".join(['"age 0x8000_0000 256K"', '"wp 0x8000_0000 256K"'] * 40),
        reads=", ".join(f'"write 0x{0x8000_0000 + 4096 * (i % 64):x}"' for i in range(200)),
    )
    workers0 = dep.engine_rss_mb()
    made = [dep.create(text) for _ in range(sessions)]
    clients = [await Client.open(d["ws"], dep.url) for d in made]
    await asyncio.gather(*[c.start() for c in clients])
    gaps = [Gaps() for _ in clients]
    late: list[float] = []
    t_start = time.perf_counter()
    for c in clients:
        await c.send("run", speed=speed, max_steps=steps)

    async def follow(c: Client, g: Gaps) -> float:
        started = None
        while True:
            t, msg, _ = await c.recv(120)
            g.see(msg)
            if msg["type"] != "delta":
                continue
            if started is None and msg.get("running"):
                started = (t, msg["decisions"])
            elif started is not None and msg["decisions"] > started[1]:
                due = started[0] + (msg["decisions"] - started[1]) / speed
                late.append(max(0.0, t - due))
            if not msg["running"] and msg["decisions"] >= steps:
                return t

    ends = await asyncio.gather(*[follow(c, g) for c, g in zip(clients, gaps, strict=True)])
    workers1 = dep.engine_rss_mb()
    wall = max(ends) - t_start
    for c in clients:
        await c.close()
    deltas = sum(g.deltas for g in gaps)
    return {
        "sessions": sessions,
        "speed": speed,
        "steps": steps,
        "ideal_s": steps / speed,
        "wall_s": wall,
        "deltas_per_s": deltas / wall,
        "late": Dist.of(late).__dict__,
        "gaps": sum(g.gaps for g in gaps),
        "workers_mb_per_session": (workers1 - workers0) / max(1, sessions),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    ap.add_argument("--viewers", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--mode", choices=("redis", "embedded"), help="default: redis when it answers")
    ap.add_argument(
        "--servers", type=int, default=1, help="web servers behind haproxy (Redis mode only)"
    )
    args = ap.parse_args(argv)
    mode = args.mode or ("redis" if redis_up() else "embedded")
    if args.servers > 1 and mode != "redis":
        ap.error("--servers needs the Redis deployment (embedded is one process)")
    os.environ.setdefault("PTVIZ_RATE_BURST", "1000")
    dep = Deployment(mode).start()
    try:
        if args.servers > 1:
            scale_out(dep, args.servers)
        out = {"mode": mode, "servers": args.servers}
        out["baseline"] = asyncio.run(fan_out(dep, 1, args.steps))
        out["fan_out"] = asyncio.run(fan_out(dep, args.viewers, args.steps))
        out["sessions"] = asyncio.run(many_sessions(dep, args.sessions, 100.0, 400))
    finally:
        dep.stop()
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    b, f, s = out["baseline"], out["fan_out"], out["sessions"]
    print(
        f"ptviz load ({mode} deployment, {args.servers} web server(s), {os.cpu_count()} CPUs; "
        "clients in this process)"
    )
    for row in (b, f):
        d = row["delta"]
        print(
            f"  {row['viewers']:>4} viewer(s), one session: step -> delta p50 "
            f"{d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms, max {d['max_ms']:.1f} ms; "
            f"server CPU {row['server_cpu_us_per_viewer_delta']:.0f} us per viewer per delta; "
            f"gaps {row['gaps']}; server {row['server_mb_per_viewer']:.2f} MB/viewer, "
            f"workers {row['workers_mb_per_viewer']:.2f} MB/viewer"
        )
    late = s["late"]
    print(
        f"  {s['sessions']:>4} sessions running at {s['speed']:g} steps/s: "
        f"{s['deltas_per_s']:.0f} deltas/s delivered, wall {s['wall_s']:.1f} s "
        f"(ideal {s['ideal_s']:.1f} s), lateness p50 {late['p50_ms']:.0f} ms p99 "
        f"{late['p99_ms']:.0f} ms; gaps {s['gaps']}; workers {s['workers_mb_per_session']:.2f} "
        "MB/session"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

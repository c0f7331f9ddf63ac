"""Moments benchmark (issue 6): how fast one viewer travels in time, and how fast the
others learn who is here and what a presenter does. Each figure next to a baseline
measured in the same run.

    python -m bench.moments [--quick] [--json] [--no-redis]

1. seek: a session of about 1,000,000 micro-steps (a host write-protecting 2^18+ leaves,
   one recorded decision per micro-step). One viewer's `seek` to random positions, `back`
   one step from there and `live`, timed in-process in the SessionHost (command in ->
   the viewer's snapshot built and encoded), and over a real websocket (embedded
   deployment). Baseline: a `resync` of a viewer following the head (the same snapshot
   without moving anything).
2. presence and follow: two websocket viewers of one session on loopback. A names itself
   -> B's `presence` names it; B follows A, A seeks -> B's snapshot at A's moment; A
   selects a descriptor -> B's `focus`. Baseline: A's `step` -> B's `delta` (the
   session group's ordinary path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass

from bench.engine import host_info
from bench.web import ROOT_TABLE, Client, Deployment, Dist, wp_scenario
from ptviz.localservices import redis_up


@dataclass
class SeekFigures:
    steps: int
    leaves: int
    interval: int  # decisions between two checkpoints
    build_s: float
    seek: Dist
    back: Dist
    live: Dist
    resync: Dist  # baseline


def seek_in_process(leaves: int, n: int) -> SeekFigures:
    import django

    django.setup()
    from engine.session import LiveSession
    from ptviz.engine_worker.host import SessionHost

    started = time.perf_counter()
    live = LiveSession(wp_scenario(leaves))
    live.run(10**9)
    build = time.perf_counter() - started
    sent = []
    host = SessionHost("bench", live, set(), lambda *a: sent.append(a), persist=False)
    host.join("viewer", [ROOT_TABLE], reply=False, who={"role": "view"})
    total = len(live.decisions)
    rng = random.Random(1)

    def timed(msg: dict) -> float:
        sent.clear()
        t0 = time.perf_counter()
        host.command({**msg, "id": 1}, "viewer")
        for _kind, _target, out in sent:  # what the transport sends: JSON text
            json.dumps(out["msg"], separators=(",", ":"))
        took = time.perf_counter() - t0
        assert any(o[2]["msg"]["type"] == "snapshot" for o in sent), sent[:2]
        return took

    seek, back, to_live, resync = [], [], [], []
    for _ in range(n):
        resync.append(timed({"cmd": "resync"}))
        seek.append(timed({"cmd": "seek", "position": rng.randrange(total)}))
        back.append(timed({"cmd": "back", "n": 1}))
        to_live.append(timed({"cmd": "live"}))
    return SeekFigures(
        total,
        leaves,
        live.interval,
        build,
        Dist.of(seek),
        Dist.of(back),
        Dist.of(to_live),
        Dist.of(resync),
    )


@dataclass
class WireFigures:
    mode: str
    steps: int
    seek: Dist  # over the websocket, big session
    resync: Dist  # baseline
    presence: Dist
    follow_seek: Dist
    focus: Dist
    step_delta: Dist  # baseline: A's step -> B's delta


async def _wire(dep: Deployment, leaves: int, n: int) -> WireFigures:
    import django

    django.setup()
    from ptviz.debugger.consumers import RESYNC_INTERVAL

    origin = dep.url
    # The big session: run to the end at full speed, then seek one viewer around it.
    big = dep.create(wp_scenario(leaves))
    a = await Client.open(big["ws"], origin)
    await a.start()
    await a.send("run")
    _, end, _ = await a.until(
        lambda m: m["type"] == "delta" and m["running"] is False and m["position"] > 0,
        timeout=600,
    )
    total = end["position"]
    rng = random.Random(2)
    seek, resync = [], []
    for _ in range(n):
        # (a viewer's resyncs are coalesced to one per RESYNC_INTERVAL: wait it out, so the
        # baseline is the snapshot's cost, not the rate limit)
        await asyncio.sleep(RESYNC_INTERVAL)
        _, t0 = await a.send("resync")
        t1, _, _ = await a.until(lambda m: m["type"] == "snapshot")
        resync.append(t1 - t0)
        p = rng.randrange(total)
        _, t0 = await a.send("seek", position=p)
        t1, _, _ = await a.until(lambda m, p=p: m["type"] == "snapshot" and m["position"] == p)
        seek.append(t1 - t0)
        await a.send("live")
        await a.until(lambda m: m["type"] == "snapshot" and m["cursor"]["live"])
    await a.close()

    # Presence and follow between two viewers of a small session.
    small = dep.create(wp_scenario(64))
    view_ws = (
        small["ws"].split("?token=")[0]
        + "?token="
        + small["links"]["view"].rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    )
    a = await Client.open(small["ws"], origin)
    b = await Client.open(view_ws, origin)
    leader = await _start_named(a)
    await b.start()
    presence, follow, focus, step_delta = [], [], [], []
    for k in range(n):
        name = f"presenter {k}"
        _, t0 = await a.send("hello", name=name)
        t1, _, _ = await b.until(
            lambda m, name=name: (
                m["type"] == "presence" and any(p["name"] == name for p in m["viewers"])
            )
        )
        presence.append(t1 - t0)
    await b.send("follow", viewer=leader)
    await b.until(lambda m: m["type"] == "snapshot")
    for _ in range(n):
        _, t0 = await a.send("step", actor="host0")
        t1, _, _ = await b.until(lambda m: m["type"] == "delta" and m["events"])
        step_delta.append(t1 - t0)
    for k in range(n):
        p = k % 5
        _, t0 = await a.send("seek", position=p)
        t1, _, _ = await b.until(lambda m, p=p: m["type"] == "snapshot" and m["position"] == p)
        follow.append(t1 - t0)
        addr = hex(0x1000003000 + 8 * (k % 64))
        _, t0 = await a.send("focus", addr=addr)
        t1, _, _ = await b.until(lambda m, addr=addr: m["type"] == "focus" and m["addr"] == addr)
        focus.append(t1 - t0)
    await a.close()
    await b.close()
    return WireFigures(
        dep.mode,
        total,
        Dist.of(seek),
        Dist.of(resync),
        Dist.of(presence),
        Dist.of(follow),
        Dist.of(focus),
        Dist.of(step_delta),
    )


async def _start_named(c: Client) -> str:
    """Wait for the viewer's snapshot; its id, which the presence message sent to a
    viewer that joined live names (`you`)."""
    you = snap = None
    while you is None or snap is None:
        _, m, _ = await c.recv()
        if m["type"] == "snapshot":
            snap = m
            you = you or m.get("you")
        elif m["type"] == "presence" and m.get("you"):
            you = m["you"]
    return you


def wire(mode: str, leaves: int, n: int) -> WireFigures:
    dep = Deployment(mode).start()
    try:
        return asyncio.run(_wire(dep, leaves, n))
    finally:
        dep.stop()


def _row(name: str, d: Dist) -> str:
    return (
        f"  {name:<44} p50 {d.p50_ms:7.2f}  p99 {d.p99_ms:7.2f}  max {d.max_ms:7.2f} ms  (n={d.n})"
    )


def report(seek: SeekFigures, wires: list[WireFigures]) -> str:
    h = host_info()
    out = [
        f"ptviz moments benchmark on {h.get('cpu', '?')} ({h.get('python', '?')})",
        f"1. one viewer's cursor in a {seek.steps:,}-step session ({seek.leaves:,} leaves; "
        f"checkpoint every {seek.interval:,} decisions; built in {seek.build_s:.1f} s), "
        "in-process SessionHost:",
        _row("seek to a random position", seek.seek),
        _row("back one step from there", seek.back),
        _row("back to live", seek.live),
        _row("baseline: resync of a viewer following the head", seek.resync),
    ]
    for w in wires:
        out += [
            f"2. over a real websocket, {w.mode} deployment ({w.steps:,}-step session):",
            _row("seek to a random position", w.seek),
            _row("baseline: resync (the head's snapshot)", w.resync),
            _row("presence: A names itself -> B's presence", w.presence),
            _row("follow: A seeks -> B (following A) there", w.follow_seek),
            _row("follow: A selects a descriptor -> B's focus", w.focus),
            _row("baseline: A's step -> B's delta", w.step_delta),
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.moments", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller session, fewer samples")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--no-wire", action="store_true", help="only the in-process figures")
    args = ap.parse_args(argv)
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ptviz.settings")
    # 2^18 + 2^16 leaves: about 1,000,000 micro-steps of wp (3 per leaf, and the walk).
    leaves = 8192 if args.quick else (1 << 18) + (1 << 16)
    n = 10 if args.quick else 40
    seek = seek_in_process(leaves, n)
    wires = []
    if not args.no_wire:
        modes = ["embedded"] + ([] if args.no_redis or not redis_up() else ["redis"])
        wires = [wire(mode, leaves, n) for mode in modes]
    if args.json:
        print(json.dumps({"seek": asdict(seek), "wire": [asdict(w) for w in wires]}, indent=1))
    else:
        print(report(seek, wires))
    return 0


if __name__ == "__main__":
    sys.exit(main())

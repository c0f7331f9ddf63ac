"""Record protocol-v1 messages from engine.session.LiveSession for bench/dev/harness.html.

Dev aid only (not used by tests): it plays what the server would send (hello, snapshot,
one delta per decision, explore_result) so the browser modules can be looked at before
or without a server.  Run from the project root:

    .venv/bin/python bench/dev/record.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine import bits as B  # noqa: E402
from engine.session import LiveSession  # noqa: E402

OUT = Path(__file__).resolve().parent / "recorded"


def all_tables(s: LiveSession) -> dict[int, int]:
    """table pa -> level, for every table reachable from the root."""
    g = s.spec.geometry
    out = {B.TABLE_BASE: g.start_level}
    stack = [(B.TABLE_BASE, g.start_level, g.start_entries)]
    while stack:
        pa, lvl, n = stack.pop()
        for raw in s.machine.table(pa, n):
            if lvl < 3 and raw & B.DESC_VALID and raw & B.DESC_TYPE:
                nxt = raw & B.OA_MASK
                out[nxt] = lvl + 1
                stack.append((nxt, lvl + 1, B.PTRS_PER_TABLE))
    return out


def record(path: str, decisions: list, subscribe_all: bool = True, explore: bool = True):
    s = LiveSession(Path(path).read_text(), path=path)
    tables = all_tables(s)
    subs = tables if subscribe_all else {B.TABLE_BASE: tables[B.TABLE_BASE]}

    def tviews():
        return {f"{pa:#x}": s.table_view(pa, lvl) for pa, lvl in subs.items()}

    msgs = [
        {
            "v": 1,
            "type": "hello",
            "protocol": 1,
            "session": "dev",
            "role": "control",
            "name": s.scenario.name,
            "kernel": s.scenario.kernel,
        },
        {
            "v": 1,
            "type": "snapshot",
            "batch": 0,
            "seq": 0,
            "position": 0,
            "decisions": 0,
            "running": False,
            "machine": s.machine_view(),
            "actors": s.actors_view(),
            "lock": s.lock_view(),
            "violations": s.violations(),
            "tables": tviews(),
            "events": s.events(),
        },
    ]
    seen = 0
    for n, d in enumerate(decisions, 1):
        s.apply(d)
        viol = s.violations()
        msgs.append(
            {
                "v": 1,
                "type": "delta",
                "batch": n,
                "position": s.position,
                "decisions": len(s.decisions),
                "running": False,
                "events": s.events(),
                "actors": s.actors_view(),
                "lock": s.lock_view(),
                "tables": tviews(),
                "violations": viol[seen:],
            }
        )
        seen = len(viol)
    if explore:
        res = subprocess.run(
            [sys.executable, "-m", "engine", "explore", path, "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        msgs.append({"v": 1, "type": "explore_result", "result": json.loads(res.stdout)})
    return {
        "actors": [{"name": n, "kind": k} for n, k in zip(s.names, s.kinds, strict=True)],
        "messages": msgs,
    }


def main():
    OUT.mkdir(exist_ok=True)
    lost = [
        "vcpu0",
        "vcpu0",
        "vcpu0",
        "host0",
        "host0",
        "host0",
        "host0",
        "vcpu0",
        "host0",
        "host0",
    ]
    jobs = {
        "seed_race_v4.6": ("scenarios/seed_race_v4.6.toml", [["step", a] for a in lost]),
        "seed_race_seed": (
            "scenarios/seed_race_seed.toml",
            [["step", a] for a in ["host0"] * 4 + ["vcpu0"] * 4 + ["host0"] * 4],
        ),
        "wp_range_seed": (
            "scenarios/wp_range_seed.toml",
            [["step", a] for a in ["host0", "vcpu0", "vcpu1"] * 12],
        ),
    }
    for name, (path, decisions) in jobs.items():
        s = LiveSession(Path(path).read_text(), path=path)
        ok = []
        for d in decisions:  # keep only decisions the engine accepts (finished actors)
            try:
                s.apply(d)
                ok.append(d)
            except Exception:
                pass
        data = record(path, ok)
        (OUT / f"{name}.json").write_text(json.dumps(data))
        print(name, len(data["messages"]), "messages")


if __name__ == "__main__":
    main()
